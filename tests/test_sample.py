"""sample_peptide end to end with a tiny random denoiser: files, order, batching, failures."""

from __future__ import annotations

import json
import math

import mdtraj
import numpy as np
import pytest
import torch
from mdtraj.formats import XTCTrajectoryFile

import jamun.model
from jamun.data.graph import topology_features
from jamun.model import Denoiser, save
from jamun.peptides import build_peptide
from jamun.sampling import (
    NonFiniteChainError,
    SampleSettings,
    SampleTarget,
    initial_positions,
    sample_peptide,
    sample_peptides,
    walk_jump_peptides,
)

torch.set_num_threads(1)
TINY_MODEL = {"sigma_nm": 0.04, "hidden_irreps": "4x0e + 2x1e", "num_layers": 2, "num_radial": 4,
              "radial_hidden": 8}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Built AA and GN structures and a randomly initialised tiny denoiser checkpoint."""
    root = tmp_path_factory.mktemp("sample_inputs")
    torch.manual_seed(0)
    save(Denoiser(TINY_MODEL, C=0.1), root / "model.ckpt")
    return {"model": root / "model.ckpt", "AA": build_peptide("AA", root / "AA.pdb"),
            "GN": build_peptide("GN", root / "GN.pdb")}


def read_xtc(path):
    with XTCTrajectoryFile(str(path)) as xtc:
        xyz, time, step, _ = xtc.read()
    return xyz, step


def test_outputs_metadata_and_step_major_steps(inputs, tmp_path):
    out = tmp_path / "AA"
    info = sample_peptide("aa", inputs["AA"], inputs["model"], out, chains=3, steps=6, burn_in=2,
                          save_every=2, friction_per_step=0.5, seed=4, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["sample.json", "samples.xtc", "topology.pdb"]
    assert json.loads((out / "sample.json").read_text()) == info
    traj = mdtraj.load(str(out / "samples.xtc"), top=str(out / "topology.pdb"))
    assert traj.n_atoms == 15 and all(a.element.symbol != "H" for a in traj.topology.atoms)
    assert traj.n_frames == info["n_samples"] == 3 * 2
    assert np.isfinite(traj.xyz).all()
    assert read_xtc(out / "samples.xtc")[1].tolist() == [4, 4, 4, 6, 6, 6]
    assert info["sigma_nm"] == info["dt"] == 0.04
    assert info["gamma"] == pytest.approx(0.5 / 0.04)
    assert (info["friction_per_step"], info["mass"], info["chains"], info["steps"], info["seed"]) == (0.5, 1.0, 3, 6, 4)
    assert info["samples_per_second"] == pytest.approx(info["n_samples"] / info["wall_seconds"])
    assert {"torch", "e3nn", "jamun"} <= set(info["versions"]) and info["device"] == "cpu"


@pytest.mark.parametrize("atoms", ["all", "heavy"])
def test_frame_k_is_chain_k_mod_chains(inputs, tmp_path, atoms):
    # Start chain i from a copy shifted by 3 i nm along x: a frame's centroid then names its chain.
    chains, steps, shift = 4, 3, 3.0
    system = mdtraj.load(str(inputs["AA"]))
    heavy = topology_features(system.topology).heavy_atom_indices
    xyz = system.xyz[0] if atoms == "all" else system.xyz[0, heavy]
    frames = np.stack([xyz + [shift * i, 0.0, 0.0] for i in range(chains)]).astype(np.float32)
    with XTCTrajectoryFile(str(tmp_path / "init.xtc"), "w") as xtc:
        xtc.write(frames)
    sample_peptide("AA", inputs["AA"], inputs["model"], tmp_path / "out", init_trajectory=tmp_path / "init.xtc",
                   chains=chains, steps=steps, progress=False)
    samples, step = read_xtc(tmp_path / "out" / "samples.xtc")
    start = system.xyz[0, heavy].mean(axis=0)[0]
    chain_of_frame = np.rint((samples.mean(axis=1)[:, 0] - start) / shift)
    np.testing.assert_array_equal(chain_of_frame, np.arange(chains * steps) % chains)
    np.testing.assert_array_equal(step, np.arange(chains * steps) // chains + 1)


def test_same_seed_same_samples_other_seed_differs(inputs, tmp_path):
    def run(name, seed):
        sample_peptide("AA", inputs["AA"], inputs["model"], tmp_path / name, chains=2, steps=3, seed=seed,
                       progress=False)
        return read_xtc(tmp_path / name / "samples.xtc")[0]

    np.testing.assert_array_equal(run("a", 0), run("b", 0))
    assert not np.array_equal(run("a", 0), run("c", 1))


class FeatureTarget(torch.nn.Module):
    """A 'denoiser' whose xhat is a fixed point per atom computed from the graph's atom features.

    If walk rows and graph rows were misaligned, a peptide's jumps would not equal its own
    feature points. The walk is then harmonic with ω dt = 1, which BAOAB handles stably.
    """

    sigma = 0.04

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the walk a device to run on

    @staticmethod
    def points(element, atom_name, residue_type) -> torch.Tensor:
        return torch.stack([element, atom_name, residue_type], dim=-1).float() * 0.1

    def xhat(self, y, graph):
        return self.points(graph.element, graph.atom_name, graph.residue_type).to(y.dtype)


def test_two_different_peptides_share_one_batch(inputs):
    systems = []
    for name in ("AA", "GN"):
        traj = mdtraj.load(str(inputs[name]))
        features = topology_features(traj.topology)
        systems.append((features, torch.from_numpy(traj.xyz[0, features.heavy_atom_indices])))
    settings = SampleSettings.from_config({"chains": 3, "steps": 4})

    saved = list(walk_jump_peptides(FeatureTarget(), systems, settings, sequences=["AA", "GN"]))
    assert [step for step, _ in saved] == [1, 2, 3, 4]
    for _, jumps in saved:
        for (features, _), xyz in zip(systems, jumps):
            expected = FeatureTarget.points(*(torch.from_numpy(getattr(features, k))
                                              for k in ("element", "atom_name", "residue_type")))
            torch.testing.assert_close(xyz, expected.expand(3, -1, -1))

    denoiser = jamun.model.load(inputs["model"])
    with torch.inference_mode():
        saved = list(walk_jump_peptides(denoiser, systems, settings))
    assert [tuple(x.shape) for x in saved[-1][1]] == [(3, 15, 3), (3, 17, 3)]
    for (_, x0), xyz in zip(systems, saved[-1][1]):  # each peptide's chains stay where it started
        assert torch.isfinite(xyz).all()
        assert torch.linalg.vector_norm(xyz.mean(dim=1) - x0.mean(dim=0), dim=-1).max() < 0.3


def test_batched_peptides_get_their_own_outputs(inputs, tmp_path):
    targets = [SampleTarget("AA", inputs["AA"], tmp_path / "AA"), SampleTarget("GN", inputs["GN"], tmp_path / "GN")]
    infos = sample_peptides(targets, inputs["model"], chains=2, steps=3, progress=False)
    for target, info, n_atoms in zip(targets, infos, (15, 17)):
        traj = mdtraj.load(str(target.out_dir / "samples.xtc"), top=str(target.out_dir / "topology.pdb"))
        assert (traj.n_frames, traj.n_atoms, info["n_atoms"]) == (6, n_atoms, n_atoms)
        assert info["batch_peptides"] == ["AA", "GN"]


class PoisonedDenoiser(torch.nn.Module):
    """Wraps a denoiser and turns one graph's jumps into NaN from a given forward call on."""

    def __init__(self, inner, graph_id: int, from_call: int) -> None:
        super().__init__()
        self.inner, self.graph_id, self.from_call, self.calls = inner, graph_id, from_call, 0
        self.sigma = inner.sigma

    def xhat(self, y, graph):
        xhat = self.inner.xhat(y, graph)
        if self.calls >= self.from_call:
            xhat[graph.batch == self.graph_id] = math.nan
        self.calls += 1
        return xhat


def test_nonfinite_chain_stops_with_partial_samples_in_work_only(inputs, tmp_path, monkeypatch):
    real_load = jamun.model.load
    monkeypatch.setattr(jamun.model, "load", lambda *a, **k: PoisonedDenoiser(real_load(*a, **k), 2, 3))
    out = tmp_path / "AA"
    out.mkdir()
    (out / "samples.xtc").write_text("stale output of an earlier run")
    with pytest.raises(NonFiniteChainError, match=r"AA: chain 2 became non-finite or diverged at walk step 3; "
                                                  r"a smaller sample.dt .*sample.score_clip_sigmas") as error:
        sample_peptide("AA", inputs["AA"], inputs["model"], out, chains=4, steps=10, progress=False)
    assert (error.value.chain, error.value.step) == (2, 3)
    partial = out / ".work" / "samples.xtc"
    assert str(partial) in str(error.value)
    assert sorted(p.name for p in out.iterdir()) == [".work", ".work.lock"]  # partial samples kept, and their lock
    samples, step = read_xtc(partial)
    assert step.tolist() == [1, 1, 1, 1, 2, 2, 2, 2] and np.isfinite(samples).all()


def test_a_diverging_chain_stops_before_it_reaches_a_file(inputs, tmp_path, monkeypatch):
    """A jump that flies off (finite, but far beyond any molecule) is stopped like a NaN one."""
    real_load = jamun.model.load

    class Diverging(PoisonedDenoiser):
        def xhat(self, y, graph):
            xhat = self.inner.xhat(y, graph)
            if self.calls >= self.from_call:
                xhat[graph.batch == self.graph_id] = 1e7
            self.calls += 1
            return xhat

    monkeypatch.setattr(jamun.model, "load", lambda *a, **k: Diverging(real_load(*a, **k), 1, 2))
    with pytest.raises(NonFiniteChainError, match="chain 1 became non-finite or diverged at walk step 2"):
        sample_peptide("AA", inputs["AA"], inputs["model"], tmp_path / "AA", chains=2, steps=5, progress=False)
    samples, _ = read_xtc(tmp_path / "AA" / ".work" / "samples.xtc")
    assert np.abs(samples).max() < 10


def test_initial_positions_add_sigma_noise_to_one_structure_or_spread_frames():
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, generator=generator)
    y0 = initial_positions(x0, 4000, 0.04, generator)
    assert y0.shape == (4000, 5, 3)
    torch.testing.assert_close(y0.mean(0), x0, atol=0.005, rtol=0)
    assert (y0 - x0).std().item() == pytest.approx(0.04, rel=0.02)
    frames = torch.arange(3.0)[:, None, None].expand(3, 5, 3)
    chosen = initial_positions(frames, 5, 1e-6, generator).mean(dim=(1, 2)).round()
    assert chosen.tolist() == [0.0, 0.0, 1.0, 2.0, 2.0]


def test_settings_reject_unknown_keys_and_empty_walks():
    with pytest.raises(ValueError, match=r"unknown key 'chainz' in sample settings; valid keys: chains, "):
        SampleSettings.from_config({"chainz": 4})
    with pytest.raises(ValueError, match=r"sample\.steps .*sample\.burn_in .*sample\.save_every"):
        SampleSettings.from_config({"steps": 10, "burn_in": 8, "save_every": 3})
    with pytest.raises(ValueError, match=r"sample\.chains = 0: must be an integer >= 1"):
        SampleSettings.from_config({"chains": 0})
    assert SampleSettings.from_config({"steps": 10, "burn_in": 2, "save_every": 3}).samples_per_chain == 2


def test_score_clip_is_a_jump_length_in_sigma_units():
    # 4 sigma is the design's 100 nm^-1 at sigma = 0.04 nm and twice that at half the noise.
    settings = SampleSettings.from_config({"score_clip_sigmas": 4.0})
    assert settings.integrator(0.04).score_clip == pytest.approx(100.0)
    assert settings.integrator(0.02).score_clip == pytest.approx(200.0)
    assert SampleSettings.from_config({"score_clip_sigmas": None}).integrator(0.02).score_clip is None
    with pytest.raises(ValueError, match="score_clip_sigmas"):
        SampleSettings.from_config({"score_clip_sigmas": 0.0})


def test_bad_inputs_are_named(inputs, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pdb"):
        sample_peptide("AA", tmp_path / "nope.pdb", inputs["model"], tmp_path / "o", chains=1, steps=1)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        sample_peptide("AA", inputs["AA"], tmp_path / "nope.ckpt", tmp_path / "o", chains=1, steps=1)
    with pytest.raises(ValueError, match="holds peptide 'GN', not the requested 'AA'"):
        sample_peptide("AA", inputs["GN"], inputs["model"], tmp_path / "o", chains=1, steps=1)
    with XTCTrajectoryFile(str(tmp_path / "bad.xtc"), "w") as xtc:
        xtc.write(np.zeros((2, 7, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="7 atoms; expected 32 .* or 15"):
        sample_peptide("AA", inputs["AA"], inputs["model"], tmp_path / "o", init_trajectory=tmp_path / "bad.xtc",
                       chains=1, steps=1)
    assert not (tmp_path / "o" / "samples.xtc").exists()


def test_cli_samples_several_peptides_in_one_batch(inputs, tmp_path):
    """`jamun sample AA GN -o ROOT` writes ROOT/AA and ROOT/GN, identical to one sample_peptides batch."""
    from jamun.cli import main

    settings = json.dumps({"chains": 2, "steps": 4, "seed": 3})
    assert main(["sample", "AA", "GN", "--model", str(inputs["model"]), "-o", str(tmp_path / "cli"),
                 "--system", str(inputs["AA"]), str(inputs["GN"]), "--device", "cpu", "--settings", settings]) == 0
    targets = [SampleTarget(p, inputs[p], tmp_path / "api" / p) for p in ("AA", "GN")]
    sample_peptides(targets, inputs["model"], device="cpu", progress=False, chains=2, steps=4, seed=3)
    for peptide in ("AA", "GN"):
        cli, api = read_xtc(tmp_path / "cli" / peptide / "samples.xtc"), read_xtc(tmp_path / "api" / peptide / "samples.xtc")
        np.testing.assert_array_equal(cli[0], api[0])
        assert json.loads((tmp_path / "cli" / peptide / "sample.json").read_text())["sequence"] == peptide
    assert main(["sample", "AA", "GN", "--model", str(inputs["model"]), "-o", str(tmp_path / "bad"),
                 "--system", str(inputs["AA"])]) == 2
