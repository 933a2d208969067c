"""binsr: binary (1-bit) neural networks for single-image super-resolution."""

__version__ = "0.1.0"

__all__ = ["upscale"]


def __getattr__(name: str):
    # lazy, so that ``import binsr`` stays light (no torch, no NumPy)
    if name == "upscale":
        from binsr.infer import upscale

        return upscale
    raise AttributeError(f"module 'binsr' has no attribute {name!r}")
