"""The JAMUN denoiser: e3nn network, preconditioning and checkpoint io."""

from jamun.model.checkpoint import load, read_checkpoint, save
from jamun.model.denoiser import Denoiser, model_config
from jamun.model.network import EquivariantNetwork
from jamun.model.precondition import Preconditioning
from jamun.model.pretrained import resolve_model

__all__ = [
    "Denoiser",
    "EquivariantNetwork",
    "Preconditioning",
    "load",
    "model_config",
    "read_checkpoint",
    "resolve_model",
    "save",
]
