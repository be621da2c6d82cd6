"""Models shipped inside the package, chosen by name and checked against a checksum at load.

``jamun/pretrained/models.json`` is the registry::

    {"default": "<name or null>",
     "models": {"<name>": {"weights": "<name>.ckpt", "sha256": "<hex>", "card": "<name>.md",
                           "summary": "<one line>"}}}

File names are relative to the registry's folder. ``pretrained`` stands for the default model.
The checksum guards against truncated or altered weights, which would otherwise load without
complaint (the shapes still match) and sample nonsense.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch

from jamun.atomic import write_atomic, write_json_atomic, write_text_atomic
from jamun.model.checkpoint import read_checkpoint

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
REGISTRY = "models.json"
DEFAULT_NAME = "pretrained"
ENTRY_KEYS = ("weights", "sha256", "card", "summary")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt")


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file, hashed in chunks so that large weights are never held in memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def shipped_models(root: Path | str = PRETRAINED_DIR) -> dict:
    """The registry ``root/models.json`` as ``{"default": name | None, "models": {name: entry}}``.

    A folder without a registry ships no models. A malformed registry raises ValueError naming it.
    """
    path = Path(root) / REGISTRY
    if not path.is_file():
        return {"default": None, "models": {}}
    try:
        registry = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"model registry {path} is not valid JSON ({error})") from None
    if not isinstance(registry, dict) or not isinstance(registry.get("models"), dict):
        raise ValueError(f"model registry {path} must be an object with a 'models' object")
    for name, entry in registry["models"].items():
        missing = [key for key in ENTRY_KEYS if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise ValueError(f"model registry {path}: entry {name!r} lacks keys {missing}")
    default = registry.get("default")
    if default is not None and default not in registry["models"]:
        raise ValueError(f"model registry {path}: default {default!r} is not a registered model")
    return {"default": default, "models": registry["models"]}


def _choices(registry: dict) -> str:
    """The shipped names for error messages, e.g. ``shipped: pretrained (= a), a, b``."""
    names = list(registry["models"])
    if not names:
        return "no models are shipped in this installation"
    if registry["default"] is not None:
        names.insert(0, f"{DEFAULT_NAME} (= {registry['default']})")
    return "shipped: " + ", ".join(names)


def resolve_model(spec: Path | str, root: Path | str = PRETRAINED_DIR) -> Path:
    """The checkpoint file that ``spec`` names: an existing file, or a shipped model's verified weights.

    ``spec`` is a checkpoint path, a registered model name, or ``pretrained`` (the registry's
    default). A missing file given as a path (a separator or a .ckpt/.pt suffix) raises
    FileNotFoundError; an unknown name, a missing default or a checksum mismatch ValueError.
    """
    path = Path(spec)
    if path.is_file():
        return path
    text = str(spec)
    if "/" in text or os.sep in text or path.suffix in _CHECKPOINT_SUFFIXES:
        raise FileNotFoundError(f"model checkpoint {text} does not exist")
    registry = shipped_models(root)
    name = registry["default"] if text == DEFAULT_NAME else text
    if text == DEFAULT_NAME and name is None:
        raise ValueError(f"model {DEFAULT_NAME!r}: no model is shipped in this installation; pass a checkpoint file")
    if name not in registry["models"]:
        raise ValueError(f"model {text!r} is neither a checkpoint file nor a shipped model; {_choices(registry)}")
    entry = registry["models"][name]
    weights = Path(root) / entry["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"shipped model {name!r}: weights file {weights} is missing; reinstall the package")
    actual = file_sha256(weights)
    if actual != entry["sha256"]:
        raise ValueError(f"shipped model {name!r}: checksum mismatch for {weights} (expected sha256 "
                         f"{entry['sha256']}, got {actual}); the file is damaged, reinstall the package")
    return weights


def model_fingerprint(spec: Path | str) -> str:
    """The sha256 of the weights ``spec`` resolves to, for a workflow that tracks the model as a
    parameter; ``"unresolved: <why>"`` (also warned) when it cannot be resolved, so that only the
    jobs that load it fail, naming the reason."""
    try:
        return file_sha256(resolve_model(spec))
    except (ValueError, FileNotFoundError) as error:
        warnings.warn(f"model {str(spec)!r} cannot be loaded ({error}); the jobs that sample with it will fail",
                      stacklevel=2)
        return f"unresolved: {error}"


def _save_half(checkpoint: Path, target: Path) -> None:
    """Save ``checkpoint`` to ``target`` with its state_dict's floating-point tensors as float16."""
    payload = read_checkpoint(checkpoint)
    state = {}
    for key, value in payload["state_dict"].items():
        if value.is_floating_point():
            half = value.to(torch.float16)
            if not torch.isfinite(half).all() and torch.isfinite(value).all():
                raise ValueError(f"checkpoint {checkpoint}: {key} overflows float16; register it with half=False")
            value = half
        state[key] = value
    torch.save({**payload, "state_dict": state}, target)


def register_model(
    checkpoint: Path | str,
    name: str,
    card_text: str,
    summary: str,
    *,
    default: bool,
    root: Path | str = PRETRAINED_DIR,
    half: bool = False,
) -> Path:
    """Ship ``checkpoint`` as model ``name``: copy it to ``root/<name>.ckpt``, write its card, register it.

    ``half`` stores the state_dict's floating-point tensors as float16 (half the size; loading
    casts them back to float32); every other entry is kept. The weights and the card
    (``root/<name>.md``) are written first, the registry last, each atomically, so an interrupted
    call never registers a file that is not complete. Returns the weights file.
    """
    if not _NAME.fullmatch(name) or name == DEFAULT_NAME or Path(name).suffix in _CHECKPOINT_SUFFIXES:
        raise ValueError(f"model name {name!r} must match {_NAME.pattern}, not be {DEFAULT_NAME!r} "
                         f"and not end in {'/'.join(_CHECKPOINT_SUFFIXES)}")
    if "\n" in summary:
        raise ValueError(f"model summary must be one line, got {summary!r}")
    checkpoint, root = Path(checkpoint), Path(root)
    registry = shipped_models(root)
    read_checkpoint(checkpoint)  # only a complete model checkpoint is shipped
    root.mkdir(parents=True, exist_ok=True)
    weights, card = root / f"{name}.ckpt", root / f"{name}.md"
    if half:
        write_atomic(weights, lambda tmp: _save_half(checkpoint, tmp))
    else:
        write_atomic(weights, lambda tmp: shutil.copyfile(checkpoint, tmp))
    write_text_atomic(card, card_text)
    registry["models"][name] = {"weights": weights.name, "sha256": file_sha256(weights), "card": card.name,
                                "summary": summary}
    if default:
        registry["default"] = name
    write_json_atomic(root / REGISTRY, registry)
    return weights
