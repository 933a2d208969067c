"""Training: YAML configs, the training loop (single process or torchrun), checkpoints.

``binsr.train.train(load_config("configs/train/srresnet_e2fif_x4_small.yaml"))`` trains into
``runs/<name>/``; ``binsr.train.load_weights(model, path)`` loads a checkpoint, refusing one of
another architecture or scale.
"""

from binsr.train.checkpoint import load_weights, read_signature, read_weights, save_weights
from binsr.train.config import TrainConfig, apply_overrides, config_from_dict, load_config
from binsr.train.trainer import train

__all__ = [
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "load_weights",
    "read_signature",
    "read_weights",
    "save_weights",
    "train",
]
