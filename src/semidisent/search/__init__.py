"""Hyper-parameter search over train.* parameters (Optuna), trials trained in batches."""
