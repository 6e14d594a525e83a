"""The partially-specified semi-supervised VAE (Siddharth et al., NeurIPS 2017) and Kingma et
al.'s M2: ``model.name = ps_vae`` (docs/psvae.md). ``spec`` and ``params`` are torch-free."""
