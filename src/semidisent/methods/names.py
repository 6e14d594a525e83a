"""The model families by their params.yaml name (``model.name``), without importing them (the
params schema, the Kubeflow compiler and the CLI's help need the names, not torch)."""

from __future__ import annotations

# disentanglement_lib's semi-supervised family (methods/s2): every member with every supervised
# regulariser, the gamma_sup schedules and label replacement.
S2_FAMILY = (
    "s2vae",
    "s2_factor_vae",
    "s2_beta_tc_vae",
    "s2_dip_vae",
    "s2_mine_vae",
    "s2_annealed_vae",
    "supervised",
)
# Siddharth et al.'s partially-specified semi-supervised VAE, with Kingma et al.'s M2 as the
# baseline objective of the same networks (methods/psvae, docs/psvae.md).
PS_FAMILY = ("ps_vae",)
# Pandey et al.'s Stiefel restricted kernel machine (methods/strkm, docs/strkm.md).
RKM_FAMILY = ("st_rkm",)
# Zhang et al.'s local-decoder VAE and its M2 (methods/localvae, docs/localvae.md).
LOCAL_FAMILY = ("local_vae",)
# Patel et al.'s Deep Rendering Mixture Model, semi-supervised (methods/drmm, docs/drmm.md).
RENDERING_FAMILY = ("drmm",)
METHOD_NAMES = S2_FAMILY + PS_FAMILY + RKM_FAMILY + LOCAL_FAMILY + RENDERING_FAMILY
