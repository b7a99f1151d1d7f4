"""latentgeo: train image classifiers and measure the geometry of their latent spaces."""

__version__ = "0.1.0"
