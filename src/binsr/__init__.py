"""binsr: binary (1-bit) neural networks for single-image super-resolution."""

__version__ = "0.1.0"
