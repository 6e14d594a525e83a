"""Metric names accepted in ``eval.metrics`` (the registry keys of semidisent.metrics)."""

METRIC_NAMES = (
    "beta_vae",
    "factor_vae",
    "mig",
    "dci",
    "sap",
    "modularity",
    "irs",
    "unsupervised",
    "downstream",
)
