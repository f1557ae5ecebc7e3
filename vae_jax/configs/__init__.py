"""Configs for `python -m vae_jax.train --config=vae_jax/configs/NAME.py`."""
