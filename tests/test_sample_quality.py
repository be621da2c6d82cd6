"""Sample quality of validation peptides: MD frames score valid with a low JSD, noise scores invalid."""

from __future__ import annotations

import math
import random
import shutil
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from jamun.training.sample_quality import QUALITY_COLUMNS, load_validation_peptide, sample_quality, score_jumps

sys.path.insert(0, str(Path(__file__).parent))
from test_shards import ALA_PDB, GN_PDB, write_trajectory  # noqa: E402

SCORING = {"bond_tolerance_nm": 0.02, "bins": 12}
LOW_NOISE = {"noise_nm": 0.002, "torsion_deg": 15.0}  # rigid bonds, two basins per phi/psi


def md_folder(root: Path, peptide: str, pdb: str, n_frames: int, seed: int) -> Path:
    """results/md/<peptide> as ``jamun simulate`` leaves it: system.pdb, traj.xtc, topology.pdb."""
    _, _, topology = write_trajectory(root, peptide, pdb, n_frames, seed=seed, **LOW_NOISE)
    shutil.copy(topology, topology.with_name("system.pdb"))
    return topology.parent


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    root = tmp_path_factory.mktemp("md")
    return {"A": md_folder(root / "md", "A", ALA_PDB, 400, seed=1), "GN": md_folder(root / "md", "GN", GN_PDB, 400, seed=2),
            "A_other_run": md_folder(root / "other", "A", ALA_PDB, 400, seed=3)}  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def heavy_xyz(folder: Path) -> np.ndarray:
    peptide = load_validation_peptide(folder)
    return mdtraj.load(str(folder / "traj.xtc"), top=str(folder / "topology.pdb"),
                       atom_indices=peptide.features.heavy_atom_indices).xyz  # fmt: skip


def test_md_frames_score_valid_and_close_while_noise_scores_broken(md):
    peptide = load_validation_peptide(md["A"])
    assert peptide.sequence == "A"
    assert peptide.reference_angles.shape == (400, 1, 2)
    own = score_jumps(peptide, heavy_xyz(md["A"]), 8, **SCORING)
    assert own["valid"] == own["bonds_ok"] == own["l_chirality_ok"] == 1.0
    assert own["left_molecule"] == 0.0 and own["jsd_rama"] == pytest.approx(0.0, abs=1e-12)
    other = score_jumps(peptide, heavy_xyz(md["A_other_run"]), 8, **SCORING)  # an independent MD run
    assert other["valid"] == 1.0 and other["left_molecule"] == 0.0
    assert 0 < other["jsd_rama"] < 0.2 and other["sample_error"] == pytest.approx(other["jsd_rama"])
    noise = np.random.default_rng(0).normal(scale=0.5, size=(400, len(peptide.start), 3)).astype(np.float32)
    broken = score_jumps(peptide, noise, 8, **SCORING)
    assert broken["valid"] == broken["bonds_ok"] == 0.0 and broken["left_molecule"] == 1.0
    assert broken["jsd_rama"] > 3 * other["jsd_rama"] and broken["sample_error"] > 1.0


def test_mirror_images_fail_chirality_only(md):
    peptide = load_validation_peptide(md["A"])
    mirrored = heavy_xyz(md["A"]) * np.array([-1.0, 1.0, 1.0], dtype=np.float32)  # D-alanine
    scores = score_jumps(peptide, mirrored, 8, **SCORING)
    assert scores["bonds_ok"] == 1.0 and scores["l_chirality_ok"] == 0.0 and scores["valid"] == 0.0


class NearestFrame(torch.nn.Module):
    """A 'denoiser' of one peptide whose xhat is the MD frame nearest to each chain's y (both
    centred, no rotation), placed at y's centroid: every jump is a real MD conformation."""

    sigma = 0.04

    def __init__(self, frames: np.ndarray) -> None:
        super().__init__()
        frames = torch.from_numpy(frames)
        self.frames = frames - frames.mean(dim=1, keepdim=True)  # [n_frames, n_atoms, 3]
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the walk a device to run on

    def xhat(self, y, graph):
        y = y.reshape(graph.num_graphs, -1, 3)
        centre = y.mean(dim=1, keepdim=True)
        distance = ((y - centre)[:, None] - self.frames[None]).square().sum(dim=(2, 3))  # [n_graphs, n_frames]
        return (self.frames[distance.argmin(dim=1)] + centre).reshape(-1, 3)


class Scatter(NearestFrame):
    """xhat = y plus 0.3 nm noise from its own generator: the jumps are not molecules."""

    def __init__(self) -> None:
        torch.nn.Module.__init__(self)
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.generator = torch.Generator().manual_seed(5)

    def xhat(self, y, graph):
        return y + 0.3 * torch.randn(y.shape, generator=self.generator)


class Exploding(Scatter):
    def xhat(self, y, graph):
        return y * math.nan


WALK = {"chains": 4, "steps": 30, "burn_in": 5, "seed": 0}


def test_sample_quality_of_a_walk_over_md_frames_and_of_broken_walks(md):
    peptide = load_validation_peptide(md["A"])
    good = NearestFrame(heavy_xyz(md["A"]))
    good.train()
    scores = sample_quality(good, [peptide], WALK, bond_tolerance_nm=0.02, bins=12)
    assert set(scores) == {"A", "mean"} and set(scores["mean"]) == set(QUALITY_COLUMNS)
    assert scores["A"] == scores["mean"]
    assert scores["A"]["valid"] == 1.0 and scores["A"]["left_molecule"] == 0.0
    assert good.training, "sample_quality restores the training mode"
    bad = sample_quality(Scatter(), [peptide], WALK, bond_tolerance_nm=0.02, bins=12)["A"]
    assert bad["valid"] == 0.0 and bad["left_molecule"] == 1.0
    assert bad["sample_error"] > scores["A"]["sample_error"] + 0.5
    nan = sample_quality(Exploding(), [peptide], WALK, bond_tolerance_nm=0.02, bins=12)["A"]
    assert nan == {"valid": 0.0, "bonds_ok": 0.0, "l_chirality_ok": 0.0, "left_molecule": 1.0,
                   "jsd_rama": math.log(2), "sample_error": 1.0 + math.log(2)}  # fmt: skip


class Collapse(NearestFrame):
    """xhat = MD frame 0 at y's centroid, whatever y: a valid molecule, one conformation."""

    def xhat(self, y, graph):
        y = y.reshape(graph.num_graphs, -1, 3)
        return (self.frames[0] + y.mean(dim=1, keepdim=True)).reshape(-1, 3)


def test_drift_jsd_from_md_frames_separates_a_walk_that_keeps_md_from_one_that_collapses(md):
    """Started on MD frames, a walk that stays on MD conformations scores a low JSD; one that
    collapses onto a single conformation scores high. From one built structure both are high:
    the drift JSD is the one that tells the two models apart."""
    peptide = load_validation_peptide(md["A"])
    frames = heavy_xyz(md["A"])
    walk = {"chains": 64, "steps": 12, "burn_in": 2, "seed": 0}
    jsd = {(model, start): sample_quality(cls(frames), [peptide], walk, **SCORING, start=start)["A"]["jsd_rama"]
           for model, cls in (("keeps", NearestFrame), ("collapses", Collapse)) for start in ("md", "built")}
    assert jsd["keeps", "md"] < 0.15 < 0.3 < jsd["collapses", "md"]
    assert jsd["keeps", "built"] > 2 * jsd["keeps", "md"]
    with pytest.raises(ValueError, match=r"start must be one of \['built', 'md'\], got 'frames'"):
        sample_quality(NearestFrame(frames), [peptide], walk, **SCORING, start="frames")


def test_two_peptides_in_one_walk_are_scored_separately_and_averaged(md):
    import jamun.model

    peptides = [load_validation_peptide(md[p]) for p in ("A", "GN")]
    torch.manual_seed(0)
    denoiser = jamun.model.Denoiser({"sigma_nm": 0.04, "hidden_irreps": "4x0e + 2x1e", "num_layers": 2,
                                     "num_radial": 4, "radial_hidden": 8}, C=0.1)  # fmt: skip
    scores = sample_quality(denoiser, peptides, {"chains": 2, "steps": 4}, bond_tolerance_nm=0.02, bins=12)
    assert set(scores) == {"A", "GN", "mean"}
    for column in QUALITY_COLUMNS:
        assert scores["mean"][column] == pytest.approx((scores["A"][column] + scores["GN"][column]) / 2)


def test_sample_quality_is_seeded_and_leaves_the_global_rng_alone(md):
    peptide = load_validation_peptide(md["A"])
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = sample_quality(Scatter(), [peptide], WALK, bond_tolerance_nm=0.02, bins=12)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
    assert sample_quality(Scatter(), [peptide], WALK, bond_tolerance_nm=0.02, bins=12) == first
    assert sample_quality(Scatter(), [peptide], {**WALK, "seed": 1}, bond_tolerance_nm=0.02, bins=12) != first


def test_missing_md_files_are_named(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "system.pdb").write_text(ALA_PDB)
    with pytest.raises(FileNotFoundError, match=r"lacks \['traj.xtc', 'topology.pdb'\]"):
        load_validation_peptide(tmp_path / "A")
