"""Shipped models: by name or 'pretrained', float16 storage, checksum at load, clear errors, `jamun models`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mdtraj
import pytest
import torch

import jamun.cli
import jamun.model
from jamun.data.graph import batch_graphs, topology_features
from jamun.model import pretrained
from jamun.model.pretrained import PRETRAINED_DIR, file_sha256, register_model, resolve_model, shipped_models

from test_model import PDB_AA  # heavy atoms of capped ALA-ALA (Angstrom)

TINY = {"sigma_nm": 0.04, "hidden_irreps": "8x0e + 2x1e", "num_layers": 2, "radial_hidden": 8, "num_radial": 4}
CARD = "# tiny\n\nA randomly initialised denoiser for tests.\n"


@pytest.fixture(scope="module")
def denoiser() -> jamun.model.Denoiser:
    torch.manual_seed(0)
    return jamun.model.Denoiser(TINY, C=0.3).eval()


@pytest.fixture
def shipped(tmp_path: Path, denoiser: jamun.model.Denoiser) -> tuple[Path, Path]:
    """(fp32 checkpoint, root) where root ships it as 'tiny' (default, float16) and 'tiny32' (float32)."""
    checkpoint = jamun.model.save(denoiser, tmp_path / "model.ckpt", history=[0.5])
    root = tmp_path / "pretrained"
    register_model(checkpoint, "tiny", CARD, "tiny test model", default=True, root=root, half=True)
    register_model(checkpoint, "tiny32", CARD, "tiny test model, float32", default=False, root=root)
    return checkpoint, root


@pytest.fixture(scope="module")
def graph_and_y(tmp_path_factory: pytest.TempPathFactory):
    pdb = tmp_path_factory.mktemp("pdb") / "AA.pdb"
    pdb.write_text(PDB_AA)
    trajectory = mdtraj.load_pdb(pdb)
    features = topology_features(trajectory.topology)
    x = torch.tensor(trajectory.xyz[0][features.heavy_atom_indices])
    y = x + TINY["sigma_nm"] * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    return batch_graphs([features]), y


def test_name_and_pretrained_load_the_half_model(shipped, denoiser, graph_and_y) -> None:
    _, root = shipped
    weights = resolve_model("tiny", root)
    assert weights == root / "tiny.ckpt"
    assert resolve_model("pretrained", root) == weights
    assert json.loads((root / "models.json").read_text())["models"]["tiny"]["sha256"] == file_sha256(weights)
    assert (root / "tiny.md").read_text() == CARD

    loaded = jamun.model.load(weights)
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values())
    assert jamun.model.read_checkpoint(weights)["history"] == [0.5]  # extras kept
    rounded = jamun.model.Denoiser(TINY, C=0.3).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in denoiser.state_dict().items()})
    graph, y = graph_and_y
    with torch.no_grad():
        expected, original, got = rounded.xhat(y, graph), denoiser.xhat(y, graph), loaded.xhat(y, graph)
    assert torch.allclose(got, expected, atol=1e-6)
    # float16 rounding moves xhat by far less than the noise level
    assert 0 < float((got - original).abs().max()) < 0.01 * TINY["sigma_nm"]


def test_half_file_is_smaller_and_float32_copy_is_byte_identical(shipped) -> None:
    checkpoint, root = shipped
    assert (root / "tiny.ckpt").stat().st_size < checkpoint.stat().st_size
    assert (root / "tiny32.ckpt").read_bytes() == checkpoint.read_bytes()
    stored = torch.load(root / "tiny.ckpt", weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values()} == {torch.float16}


def test_existing_file_is_returned_as_is(shipped) -> None:
    checkpoint, root = shipped
    assert resolve_model(checkpoint, root) == checkpoint
    assert resolve_model(str(checkpoint), root) == checkpoint


def test_flipped_byte_fails_the_checksum(shipped) -> None:
    _, root = shipped
    weights = root / "tiny.ckpt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    expected = json.loads((root / "models.json").read_text())["models"]["tiny"]["sha256"]
    for spec in ("tiny", "pretrained"):
        with pytest.raises(ValueError, match="checksum") as error:
            resolve_model(spec, root)
        message = str(error.value)
        assert str(weights) in message and expected in message and file_sha256(weights) in message
        assert "reinstall" in message
    assert resolve_model("tiny32", root) == root / "tiny32.ckpt"  # the other model is unaffected


def test_unknown_name_lists_the_choices(shipped) -> None:
    _, root = shipped
    with pytest.raises(ValueError) as error:
        resolve_model("foo", root)
    message = str(error.value)
    assert "\n" not in message
    assert "'foo'" in message and "checkpoint file" in message
    assert "pretrained (= tiny)" in message and "tiny32" in message


def test_missing_path_and_empty_registry(tmp_path: Path) -> None:
    for spec in ("results/train/model.ckpt", "model.ckpt", "weights.pt", tmp_path / "gone.ckpt"):
        with pytest.raises(FileNotFoundError, match=re.escape(str(spec))):
            resolve_model(spec, tmp_path)
    with pytest.raises(ValueError, match="no model is shipped in this installation"):
        resolve_model("pretrained", tmp_path)
    with pytest.raises(ValueError, match="'foo' is neither .* no models are shipped"):
        resolve_model("foo", tmp_path)


def test_register_rejects_bad_names_and_keeps_the_default(shipped) -> None:
    checkpoint, root = shipped
    for name in ("pretrained", "a/b", "x.ckpt", ""):
        with pytest.raises(ValueError, match="model name"):
            register_model(checkpoint, name, CARD, "s", default=False, root=root)
    register_model(checkpoint, "third", CARD, "another", default=False, root=root)
    registry = shipped_models(root)
    assert registry["default"] == "tiny" and list(registry["models"]) == ["tiny", "tiny32", "third"]
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_models_command_lists_shipped_models(shipped, tmp_path, monkeypatch, capsys) -> None:
    _, root = shipped
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", root)
    assert jamun.cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("tiny (pretrained): tiny test model") and str(root / "tiny.md") in lines[0]
    assert lines[1].startswith("tiny32: ")

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "empty")
    assert jamun.cli.main(["models"]) == 0
    assert capsys.readouterr().out.strip() == "no shipped models in this installation"


def test_shipped_registry_is_valid_and_its_checksums_match() -> None:
    registry = shipped_models(PRETRAINED_DIR)
    assert (PRETRAINED_DIR / "models.json").is_file()
    assert registry["default"] is None or registry["default"] in registry["models"]
    for name, entry in registry["models"].items():
        assert (PRETRAINED_DIR / entry["card"]).is_file(), name
        assert file_sha256(PRETRAINED_DIR / entry["weights"]) == entry["sha256"], name
        assert resolve_model(name) == PRETRAINED_DIR / entry["weights"]


def test_fingerprint_is_the_weights_checksum_or_a_warned_reason(shipped, tmp_path: Path) -> None:
    """What the workflow tracks for `pretrained_model`: the sha256, or why it cannot load."""
    checkpoint, _ = shipped
    assert pretrained.model_fingerprint(checkpoint) == file_sha256(checkpoint)
    with pytest.warns(UserWarning, match="nope.ckpt"):
        assert pretrained.model_fingerprint(tmp_path / "nope.ckpt").startswith("unresolved: model checkpoint")
