"""The maths of the discrete-latent families (issue 23), before they are wired as families.

  * `quantizers`: the VQ-VAE's vector quantiser (nearest code by one matrix
    product, the straight-through gradient, the commitment and codebook losses,
    the EMA codebook and dead-code restarts), finite scalar quantisation (FSQ),
    and the codebook's usage metrics (perplexity, codes in use);
  * `code_prior`: an autoregressive prior over a grid of code indices, a small
    causal transformer over the raster order, fitted as a second stage on the
    codes of the training set and sampled position by position.

Everything here is a flax module or a pure function of explicit state and keys;
the `vqvae` and `fsq` families (with the trainer's model-family interface) build
on them.
"""
