"""Metric names accepted in ``eval.metrics`` (the registry keys of semidisent.metrics).

Kept free of imports: the parameter schema validates ``eval.metrics`` against these names.
"""

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

# Few-label model selection (eval.few_label): computed on the held-out labelled pool.
FEW_LABEL_NAMES = ("val_mig", "val_dci", "val_sap")

# The one score of each metric that summaries, reports and search objectives use
# (metrics.json keeps every score; "summary" repeats these under the metric's name).
HEADLINE = {
    "beta_vae": "eval_accuracy",
    "factor_vae": "eval_accuracy",
    "mig": "discrete_mig",
    "dci": "disentanglement",
    "sap": "SAP_score",
    "modularity": "modularity_score",
    "irs": "IRS",
    "unsupervised": "gaussian_total_correlation",
    # the largest training size of the first predictor (e.g. gbt, 10000:mean_test_accuracy)
    "downstream": "mean_test_accuracy",
    "val_mig": "discrete_mig",
    "val_dci": "disentanglement",
    "val_sap": "SAP_score",
}
