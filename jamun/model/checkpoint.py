"""Checkpoints that rebuild a :class:`Denoiser` on their own (config and C embedded).

A checkpoint is ``torch.save`` of a dict with keys ``model_config``, ``C``, ``state_dict`` and any
extras (training state); it holds only plain Python values and tensors, so it loads with
``torch.load(weights_only=True)``. Shipped models may store their weights as float16
(:func:`jamun.model.pretrained.register_model`); reading casts them back to float32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from jamun.atomic import write_atomic
from jamun.errors import bad_file
from jamun.model.denoiser import Denoiser

REQUIRED_KEYS = ("model_config", "C", "state_dict")


def save(denoiser: Denoiser, path: Path | str, **extra) -> Path:
    """Write ``denoiser`` (and ``extra`` entries) to ``path`` atomically; returns the path."""
    clash = sorted(set(extra) & set(REQUIRED_KEYS))
    if clash:
        raise ValueError(f"extra checkpoint entries {clash} clash with reserved keys {REQUIRED_KEYS}")
    payload = {
        "model_config": dict(denoiser.config),
        "C": float(denoiser.C),
        "state_dict": {k: v.detach().cpu() for k, v in denoiser.state_dict().items()},
        **extra,
    }
    return write_atomic(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict (model entries and extras), loaded with ``weights_only=True``.

    Floating-point tensors of its ``state_dict`` are returned as float32, the model's dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, pickle or OS errors for a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise bad_file(path, f"not a readable model checkpoint ({type(error).__name__}: {reason[:200]})",
                       "it is truncated or not a jamun checkpoint: rerun the training that wrote it") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise bad_file(path, f"lacks the keys {missing} of a model checkpoint ({', '.join(REQUIRED_KEYS)})",
                       "pass a checkpoint written by `jamun train`")
    checkpoint["state_dict"] = {
        key: value.float() if value.is_floating_point() else value for key, value in checkpoint["state_dict"].items()
    }
    return checkpoint


def load(path: Path | str, map_location: str | torch.device = "cpu") -> Denoiser:
    """Rebuild the :class:`Denoiser` saved at ``path`` (in eval mode, on ``map_location``)."""
    checkpoint = read_checkpoint(path, map_location)
    denoiser = Denoiser(checkpoint["model_config"], checkpoint["C"])
    load_weights(denoiser, checkpoint["state_dict"], path)
    return denoiser.to(map_location).eval()


def load_weights(denoiser: torch.nn.Module, state_dict: dict, source: Path | str) -> None:
    """``denoiser.load_state_dict(state_dict)``; a mismatch names the differing keys and shapes."""
    expected = denoiser.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''} ({len(keys)})" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes)) if keys]
        raise bad_file(source, f"weights of another architecture: {'; '.join(parts)}",
                       "use a checkpoint of the same model settings (train.model)")
    denoiser.load_state_dict(state_dict)
