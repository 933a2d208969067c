"""Data: MATLAB-compatible ``imresize``, image I/O, the data root and SR datasets."""

from binsr.data.datasets import BenchmarkSet, ImageFolder, SRPair, TrainPatches
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
