"""Stages: pure functions of (params, input artifacts) -> output artifacts, called by the CLI,
by dvc.yaml (through the CLI) and by the Kubeflow components."""
