"""The energy output (``train.model.output: energy``): a conservative score that keeps the
denoiser's symmetries, trains through the double backward pass and samples under no_grad."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import pytest
import torch
from e3nn import o3

from jamun.data.graph import batch_graphs, topology_features
from jamun.model import Denoiser
from jamun.model import checkpoint
from jamun.sampling.sample import SampleSettings, walk_jump_peptides

SIGMA, C = 0.04, 0.25
DATA = Path(__file__).parent / "data"


def make_denoiser(output: str, dtype: torch.dtype = torch.float32) -> Denoiser:
    torch.manual_seed(0)
    config = dict(sigma_nm=SIGMA, hidden_irreps="16x0e + 4x1e", num_layers=3, r_cut_nm=0.5, num_radial=8,
                  radial_hidden=16, max_num_neighbors=1000, output=output)  # fmt: skip
    return Denoiser(config, C).to(dtype)


@pytest.fixture(scope="module")
def peptide() -> tuple:
    """Features and positions (n, 3) nm of capped SER-GLY, heavy atoms."""
    trajectory = mdtraj.load_pdb(DATA / "ace_ser_gly_nme_heavy.pdb")
    features = topology_features(trajectory.topology)
    return features, torch.tensor(trajectory.xyz[0][features.heavy_atom_indices])


def noisy(x: torch.Tensor, seed: int) -> torch.Tensor:
    return x + SIGMA * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


def score_jacobian(denoiser: Denoiser, graph, y: torch.Tensor) -> torch.Tensor:
    """d score / d y, (3N, 3N), by autograd through xhat."""

    def flat_score(flat: torch.Tensor) -> torch.Tensor:
        return ((denoiser.xhat(flat.view(-1, 3), graph) - flat.view(-1, 3)) / SIGMA**2).reshape(-1)

    return torch.autograd.functional.jacobian(flat_score, y.reshape(-1))


def test_energy_score_is_a_gradient_field_and_the_vector_score_is_not(peptide: tuple) -> None:
    """A gradient field has a symmetric Jacobian (zero curl); the vector output's is far from it."""
    features, x = peptide
    graph = batch_graphs([features])
    y = noisy(x, seed=0).double()
    asymmetry = {}
    for output in ("energy", "vector"):
        jacobian = score_jacobian(make_denoiser(output, torch.float64), graph, y)
        asymmetry[output] = float((jacobian - jacobian.T).norm() / jacobian.norm())
    assert asymmetry["energy"] < 1e-10
    assert asymmetry["vector"] > 1e-3


def test_energy_xhat_is_rotation_and_translation_equivariant_and_sees_mirrors(peptide: tuple) -> None:
    features, x = peptide
    graph = batch_graphs([features, features])
    denoiser = make_denoiser("energy")
    y = torch.cat([noisy(x, seed=1), noisy(x, seed=2)])
    xhat = denoiser.xhat(y, graph)
    assert float((xhat - y).detach().abs().max()) > 1e-4
    torch.manual_seed(3)
    for _ in range(3):
        rotation, shift = o3.rand_matrix(), torch.randn(3)
        assert torch.allclose(denoiser.xhat(y @ rotation.T + shift, graph), xhat @ rotation.T + shift, atol=1e-5)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    output = denoiser.network_output(y, graph)
    mirrored = denoiser.network_output(y @ mirror, graph)
    # Chirality reaches the energy only through a cross then a dot product (two layers deep):
    # small at initialisation (0.6 %) but far above float error.
    assert float(((mirrored - output @ mirror).norm() / output.norm()).detach()) > 1e-3


def test_energy_output_trains_through_the_gradient(peptide: tuple) -> None:
    """Every parameter gets a finite gradient (double backward), and Adam lowers the loss."""
    features, x = peptide
    graph = batch_graphs([features] * 4)
    denoiser = make_denoiser("energy")
    clean = x.repeat(4, 1)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        optimizer.zero_grad()
        loss = denoiser.loss(clean, noisy(clean, seed=step % 3), graph)
        loss.backward()
        if step == 1:  # at step 0 the zero-initialised noise scale hides the noise embedding
            missing = [n for n, p in denoiser.named_parameters()
                       if p.numel() and (p.grad is None or not p.grad.isfinite().all() or not p.grad.any())]
            assert not missing, missing
        optimizer.step()
        losses.append(float(loss))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_energy_model_saves_loads_and_walks_under_no_grad(peptide: tuple, tmp_path: Path) -> None:
    features, x = peptide
    denoiser = make_denoiser("energy")
    checkpoint.save(denoiser, tmp_path / "model.ckpt")
    loaded = checkpoint.load(tmp_path / "model.ckpt")
    assert loaded.config["output"] == "energy"
    settings = SampleSettings.from_config({"chains": 2, "steps": 3, "seed": 0})
    with torch.no_grad():
        jumps = [j for _, (j,) in walk_jump_peptides(loaded, [(features, x)], settings)]
    assert len(jumps) == 3 and all(j.shape == (2, *x.shape) and torch.isfinite(j).all() for j in jumps)
    assert not jumps[-1].requires_grad
