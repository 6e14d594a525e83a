"""Disentanglement metrics, faithful to disentanglement_lib ("reference" mode) and fast ("fast"
mode: batched torch / numpy estimators of the same quantities); docs/metrics.md.

One module per metric (beta_vae, factor_vae, mig, dci, sap, modularity, irs, unsupervised,
downstream, few_label), each a ``compute_*(dataset, representation, seed, settings)`` sampling
wrapper around pure ``*_scores`` cores; :mod:`.registry` maps the names of ``eval.metrics`` to
them. Nothing is imported here: the parameter schema imports :mod:`.names` and must stay light.
"""
