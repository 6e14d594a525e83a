"""semidisent: semi-supervised disentanglement learning with label replacement.

The science (data, supervision, models, objectives, metrics) lives in this package and imports
only numpy/torch/scikit-learn; orchestration (MLflow, DVC, Optuna, Kubeflow) sits in thin modules
that are imported lazily by the CLI.
"""

__version__ = "0.1.0"
