"""Networks (no objectives here)."""

from .vae import VAE, VAEConfig

__all__ = ["VAE", "VAEConfig"]
