"""Checkpoints that rebuild a :class:`Denoiser` on their own (config and C embedded).

A checkpoint is ``torch.save`` of a dict with keys ``model_config``, ``C``, ``state_dict`` and any
extras (training state); it holds only plain Python values and tensors, so it loads with
``torch.load(weights_only=True)``. Shipped models may store their weights as float16
(:func:`jamun.model.pretrained.register_model`); reading casts them back to float32.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from jamun.model.denoiser import Denoiser

REQUIRED_KEYS = ("model_config", "C", "state_dict")


def save(denoiser: Denoiser, path: Path | str, **extra) -> Path:
    """Write ``denoiser`` (and ``extra`` entries) to ``path`` atomically; returns the path."""
    clash = sorted(set(extra) & set(REQUIRED_KEYS))
    if clash:
        raise ValueError(f"extra checkpoint entries {clash} clash with reserved keys {REQUIRED_KEYS}")
    path = Path(path)
    payload = {
        "model_config": dict(denoiser.config),
        "C": float(denoiser.C),
        "state_dict": {k: v.detach().cpu() for k, v in denoiser.state_dict().items()},
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict (model entries and extras), loaded with ``weights_only=True``.

    Floating-point tensors of its ``state_dict`` are returned as float32, the model's dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {path} lacks keys {missing}; a model checkpoint has {REQUIRED_KEYS}")
    checkpoint["state_dict"] = {
        key: value.float() if value.is_floating_point() else value for key, value in checkpoint["state_dict"].items()
    }
    return checkpoint


def load(path: Path | str, map_location: str | torch.device = "cpu") -> Denoiser:
    """Rebuild the :class:`Denoiser` saved at ``path`` (in eval mode, on ``map_location``)."""
    checkpoint = read_checkpoint(path, map_location)
    denoiser = Denoiser(checkpoint["model_config"], checkpoint["C"])
    denoiser.load_state_dict(checkpoint["state_dict"])
    return denoiser.to(map_location).eval()
