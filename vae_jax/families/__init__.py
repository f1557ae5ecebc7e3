"""Model families: each one module (or one folder for a large one) plus a registration.

A family holds its config fields, its flax module, its training objective and
what it can do beyond training (a likelihood bound, prior samples, codes for
the latent API). The trainer, evaluation and reporting know no family.
"""
