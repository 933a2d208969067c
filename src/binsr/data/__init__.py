"""Data: MATLAB-compatible ``imresize``, image I/O, the data root and SR datasets.

The datasets (torch ``Dataset`` s) load on first use, so that image I/O and ``imresize`` stay
torch-free (``binsr upscale`` of a packed ``.bsr`` model never imports torch).
"""

from binsr.data.io import read_image, read_image_alpha, write_image
from binsr.data.paths import data_root
from binsr.data.resize import imresize, modcrop

__all__ = [
    "BenchmarkSet",
    "ImageFolder",
    "SRPair",
    "TrainPatches",
    "data_root",
    "imresize",
    "modcrop",
    "read_image",
    "read_image_alpha",
    "write_image",
]

_DATASETS = ("BenchmarkSet", "ImageFolder", "SRPair", "TrainPatches")


def __getattr__(name: str):
    if name in _DATASETS:
        from binsr.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'binsr.data' has no attribute {name!r}")
