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

# Few-label model selection (eval.few_label): computed on the labelled pool.
FEW_LABEL_NAMES = ("val_mig", "val_dci", "val_sap")
# eval.few_label_protocol (metrics/few_label.py): dlib = disentanglement_lib's protocol (val_mig on
# the whole pool, val_dci / val_sap fitted on the training rows, scored on the validation rows);
# heldout = every score on the validation rows only.
FEW_LABEL_PROTOCOLS = ("dlib", "heldout")
# The fewest labelled points each score needs to rank a perfect code above a random one in
# (nearly) every labelled pool: val_mig scored on 20 points, val_dci fitted on 18 (its headline
# comes from the fitted importances), val_sap tested on 10. Measured with
# benchmarks/few_label_protocols.py on two factor grids, docs/metrics.md "Few-label model
# selection". The heldout protocol is refused below them (100 held-out labels: val_sap's 10%);
# the dlib protocol warns.
FEW_LABEL_MIN_POINTS = {"val_mig": 20, "val_dci": 18, "val_sap": 10}

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
