"""Several noise levels: training over train.sigma_range_nm (per-graph sigma, Karras weighting,
reproducible draws) and the walk at sample.sigma_nm with jumps at sample.jump_sigma_nm (exact
Gaussian target)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import mdtraj
import pytest
import torch
from scipy.spatial.transform import Rotation

import jamun.model
from jamun.data.dataset import EpochOrder, ShardSplit
from jamun.data.graph import batch_graphs, graph_mean, topology_features
from jamun.data.shards import write_shards
from jamun.model import Denoiser, Preconditioning, model_config
from jamun.sampling.sample import SampleSettings, walk_jump_peptides
from jamun.training import train
from jamun.training.loss import DenoisingLoss
from jamun.training.noise import TRAIN_STREAM, batch_noise, batch_noise_and_sigma, corrupt, rank_noise_and_sigma
from jamun.training.settings import train_settings

sys.path.insert(0, str(Path(__file__).parent))
from test_shards import ALA_PDB, GN_PDB, write_trajectory  # noqa: E402

DATA = Path(__file__).parent / "data"
C = 0.25
RANGE = [0.01, 0.2]
TINY_MODEL = {"hidden_irreps": "4x0e + 2x1e", "num_layers": 2, "num_radial": 4, "radial_hidden": 8}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def peptides() -> dict:
    """{"AA": (features, positions (n, 3) nm), "SG": ...} from the test structures."""
    result = {}
    for name, file in [("AA", "ace_ala_ala_nme_heavy.pdb"), ("SG", "ace_ser_gly_nme_heavy.pdb")]:
        trajectory = mdtraj.load_pdb(DATA / file)
        features = topology_features(trajectory.topology)
        result[name] = (features, torch.tensor(trajectory.xyz[0][features.heavy_atom_indices]))
    return result


def ranged_denoiser(seed: int = 0, **overrides) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser({"sigma_nm": 0.04, "sigma_range_nm": RANGE, **TINY_MODEL, **overrides}, C)


def batch(peptides: dict, names: list[str], sigma: float | torch.Tensor, seed: int):
    """Graph, clean x and noisy y = x + sigma eta (sigma a float or one per graph)."""
    graph = batch_graphs([peptides[n][0] for n in names])
    x = torch.cat([peptides[n][1] for n in names])
    eta = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    x, y = corrupt(x, eta, sigma, graph)
    return graph, x, y


# ---- 1. the two-level walk on an exact Gaussian target ----------------------------------------------


class GaussianDenoiser(torch.nn.Module):
    """Optimal denoiser of x ~ N(mu, s^2 I): xhat_sigma(y) = mu + s^2 / (s^2 + sigma^2) (y - mu),
    with the Denoiser's sigma interface (a range; ``check_sigma`` is the real one); counts calls."""

    check_sigma = Denoiser.check_sigma

    def __init__(self, mu: torch.Tensor, s: float, sigma: float, sigma_range: tuple[float, float]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives walk_jump_peptides a device
        self.mu, self.s, self.sigma, self.sigma_range = mu, s, sigma, sigma_range
        self.levels: list[float | None] = []

    def xhat(self, y: torch.Tensor, graph, sigma: float | None = None) -> torch.Tensor:
        self.levels.append(sigma)
        level = self.sigma if sigma is None else sigma
        return self.mu + self.s**2 / (self.s**2 + level**2) * (y - self.mu)


def jump_variance(s: float, sw: float, sj: float) -> float:
    """Var(jump) per coordinate for y ~ N(mu, (s^2 + sw^2) I): with a_w = s^2/(s^2+sw^2),
    a_j = s^2/(s^2+sj^2), b = a_w + (sj/sw)(1 - a_w): a_j^2 b^2 (s^2 + sw^2)
    = s^4 (s^2 + sj sw)^2 / ((s^2 + sj^2)^2 (s^2 + sw^2))."""
    a_w, a_j = s**2 / (s**2 + sw**2), s**2 / (s**2 + sj**2)
    b = a_w + (sj / sw) * (1 - a_w)
    return a_j**2 * b**2 * (s**2 + sw**2)


def test_closed_form_jump_variance():
    s, sw, sj = 0.1, 0.1, 0.03
    closed = s**4 * (s**2 + sj * sw) ** 2 / ((s**2 + sj**2) ** 2 * (s**2 + sw**2))
    assert jump_variance(s, sw, sj) == pytest.approx(closed, rel=1e-12)
    # one level: a_w^2 (s^2 + sw^2); sj -> 0: y' = xhat_w, the same jump
    assert jump_variance(s, sw, sw) == pytest.approx((s**2 / (s**2 + sw**2)) ** 2 * (s**2 + sw**2), rel=1e-12)
    assert jump_variance(s, sw, 1e-9) == pytest.approx(jump_variance(s, sw, sw), rel=1e-6)


@pytest.mark.parametrize("jump_sigma", [None, 0.03])
def test_two_level_walk_samples_the_exact_jump_distribution(peptides, jump_sigma):
    s, walk_sigma, chains = 0.1, 0.1, 100
    features, mu = peptides["AA"]
    denoiser = GaussianDenoiser(mu.repeat(chains, 1), s, sigma=0.04, sigma_range=(0.01, 0.2))
    settings = SampleSettings.from_config({
        "chains": chains, "steps": 400, "burn_in": 100, "save_every": 10, "friction_per_step": 1.0,
        "score_clip_sigmas": None, "seed": 3, "device": "cpu", "sigma_nm": walk_sigma, "jump_sigma_nm": jump_sigma,
    })  # fmt: skip
    jumps = [xyz.double() - mu.double() for _, (xyz,) in walk_jump_peptides(denoiser, [(features, mu)], settings)]
    jumps = torch.stack(jumps)  # [saves, chains, atoms, 3]
    assert jumps.shape == (30, chains, len(mu), 3)
    variance = float(jumps.square().mean())
    expected = jump_variance(s, walk_sigma, walk_sigma if jump_sigma is None else jump_sigma)
    assert variance == pytest.approx(expected, rel=0.01)  # measured within 0.05%
    # the two cases differ by far more than the tolerance: 0.711 s^2 against 0.5 s^2
    assert abs(jump_variance(s, 0.1, 0.03) / jump_variance(s, 0.1, 0.1) - 1) > 0.3
    # calls: one per step (+ the initial one) at the walk level, one more per saved jump at its level
    walk_calls = [level for level in denoiser.levels if level == walk_sigma]
    assert len(walk_calls) == settings.steps + 1
    assert len(denoiser.levels) == settings.steps + 1 + (0 if jump_sigma is None else settings.samples_per_chain)
    if jump_sigma is not None:
        assert denoiser.levels.count(jump_sigma) == settings.samples_per_chain


def test_default_levels_call_the_model_exactly_as_a_one_level_walk(peptides):
    features, mu = peptides["AA"]
    denoiser = GaussianDenoiser(mu.repeat(2, 1), 0.1, sigma=0.04, sigma_range=None)
    settings = SampleSettings.from_config({"chains": 2, "steps": 5, "device": "cpu"})
    assert settings.noise_levels(denoiser) == (0.04, 0.04)
    list(walk_jump_peptides(denoiser, [(features, mu)], settings))
    assert denoiser.levels == [None] * 6  # xhat(y, graph): no sigma argument, one call per step


# ---- 2. a Denoiser over a range of noise levels -----------------------------------------------------


def test_per_graph_sigma_equals_each_graph_at_its_float_sigma(peptides):
    denoiser = ranged_denoiser()
    sigmas = torch.tensor([0.015, 0.15])
    graph, _, y = batch(peptides, ["AA", "SG"], sigmas, seed=1)
    together = denoiser.xhat(y, graph, sigmas)
    n = len(peptides["AA"][1])
    alone = torch.cat([denoiser.xhat(y[:n], batch_graphs([peptides["AA"][0]]), 0.015),
                       denoiser.xhat(y[n:], batch_graphs([peptides["SG"][0]]), 0.15)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    # the level matters, and None is the model's sigma_nm exactly
    assert not torch.allclose(denoiser.xhat(y, graph, 0.015), denoiser.xhat(y, graph, 0.15))
    assert torch.equal(denoiser.xhat(y, graph), denoiser.xhat(y, graph, 0.04))
    torch.testing.assert_close(denoiser.xhat(y, graph, torch.tensor([0.04, 0.04])), denoiser.xhat(y, graph),
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"\(2,\) tensor"):
        denoiser.xhat(y, graph, torch.tensor([0.04]))


@pytest.mark.parametrize("output", ["vector", "energy"])
def test_equivariance_at_two_sigmas(peptides, output):
    denoiser = ranged_denoiser(seed=2, output=output)
    graph, _, y = batch(peptides, ["AA", "SG"], 0.05, seed=2)
    rotation = torch.tensor(Rotation.random(random_state=5).as_matrix(), dtype=torch.float32)
    shift = torch.tensor([0.3, -0.2, 0.1])
    for sigma in (0.02, torch.tensor([0.012, 0.18])):
        moved = denoiser.xhat(y @ rotation.T + shift, graph, sigma)
        torch.testing.assert_close(moved, denoiser.xhat(y, graph, sigma) @ rotation.T + shift, rtol=1e-4, atol=1e-5)


def test_radial_cutoff_reaches_zero_inside_the_graph_cutoff_at_every_sigma():
    denoiser = ranged_denoiser()
    r_cut, radial = denoiser.config["r_cut_nm"], denoiser.network.radial
    assert radial.r_max == pytest.approx(Preconditioning(sigma=RANGE[1], C=C).c_in * r_cut)
    for sigma in (RANGE[0], 0.04, RANGE[1]):
        c_in = Preconditioning(sigma=sigma, C=C).c_in
        _, envelope = radial(torch.tensor([c_in * r_cut]))  # an edge at the radius-graph cutoff
        assert float(envelope) == 0.0, sigma
    one_level = Denoiser({"sigma_nm": 0.04, **TINY_MODEL}, C)
    assert one_level.network.radial.r_max == Preconditioning(sigma=0.04, C=C).c_in * r_cut


def test_checkpoint_records_the_range(tmp_path, peptides):
    denoiser = ranged_denoiser()
    path = jamun.model.save(denoiser, tmp_path / "model.ckpt")
    assert torch.load(path, weights_only=True)["model_config"]["sigma_range_nm"] == RANGE
    loaded = jamun.model.load(path)
    assert loaded.sigma_range == (0.01, 0.2) and loaded.config == denoiser.config
    graph, _, y = batch(peptides, ["AA"], 0.1, seed=3)
    assert torch.equal(loaded.xhat(y, graph, 0.1), denoiser.xhat(y, graph, 0.1))
    # a config written before the key existed is a one-level model
    old = {"sigma_nm": 0.04, **TINY_MODEL}
    assert model_config(old)["sigma_range_nm"] is None and Denoiser(old, C).sigma_range is None


# ---- 3. the loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bond_weight", [0.0, 3.0])
def test_per_graph_loss_is_the_mean_of_single_graph_losses(peptides, bond_weight):
    denoiser = ranged_denoiser(seed=4)
    names, sigmas = ["AA", "SG", "AA"], torch.tensor([0.02, 0.07, 0.15])
    graph, x, y = batch(peptides, names, sigmas, seed=4)
    together = denoiser.loss(x, y, graph, bond_weight=bond_weight, sigma=sigmas)
    singles, start = [], 0
    for name, sigma in zip(names, sigmas.tolist()):
        n = len(peptides[name][1])
        one = batch_graphs([peptides[name][0]])
        singles.append(denoiser.loss(x[start:start + n], y[start:start + n], one, bond_weight=bond_weight, sigma=sigma))
        start += n
    torch.testing.assert_close(together, torch.stack(singles).mean(), rtol=1e-5, atol=0)
    # each term is in units of its own c_out^2: the weighting is Karras' 1/c_out(sigma)^2
    c_out = Preconditioning(sigma=0.15, C=C).c_out
    single = graph_mean((denoiser.xhat(y[-len(peptides["AA"][1]):], batch_graphs([peptides["AA"][0]]), 0.15)
                         - x[-len(peptides["AA"][1]):]).square().sum(1), batch_graphs([peptides["AA"][0]]))
    if bond_weight == 0:
        torch.testing.assert_close(singles[-1], single.mean() / c_out**2, rtol=1e-6, atol=0)


def test_one_level_loss_is_unchanged(peptides):
    denoiser = Denoiser({"sigma_nm": 0.04, **TINY_MODEL}, C)
    graph = batch_graphs([peptides[n][0] for n in ("AA", "SG")])
    x = torch.cat([peptides[n][1] for n in ("AA", "SG")])
    eta = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    loss = DenoisingLoss(denoiser)(x, eta, graph)
    # the explicit computation: y = x + sigma eta centred and aligned, mean over graphs of the
    # per-atom mean squared error, divided by c_out^2
    xc, y = corrupt(x, eta, 0.04, graph)
    explicit = graph_mean((denoiser.xhat(y, graph) - xc).square().sum(dim=1), graph).mean()
    assert torch.equal(loss, explicit / Preconditioning(sigma=0.04, C=C).c_out ** 2)
    # a per-graph tensor at the model's level gives the same loss up to rounding
    torch.testing.assert_close(DenoisingLoss(denoiser)(x, eta, graph, torch.tensor([0.04, 0.04])), loss,
                               rtol=1e-6, atol=0)


# ---- 4. reproducible draws and training ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    sources = [write_trajectory(root / "md", "A", ALA_PDB, 60, seed=1),
               write_trajectory(root / "md", "GN", GN_PDB, 60, seed=2)]
    write_shards("train", sources, root / "shards" / "train", frames_per_shard=50, seed=0)
    return root / "shards"


def test_sigmas_are_fixed_by_seed_and_step_and_shared_across_ranks(shards):
    cpu = torch.device("cpu")
    eta, sigma = batch_noise_and_sigma(0, TRAIN_STREAM, 7, 50, 4000, (0.01, 0.2), cpu)
    assert torch.equal(eta, batch_noise(0, TRAIN_STREAM, 7, 50, cpu))  # the noise is today's
    assert torch.equal(sigma, batch_noise_and_sigma(0, TRAIN_STREAM, 7, 50, 4000, (0.01, 0.2), cpu)[1])
    assert not torch.equal(sigma, batch_noise_and_sigma(0, TRAIN_STREAM, 8, 50, 4000, (0.01, 0.2), cpu)[1])
    assert 0.01 <= float(sigma.min()) and float(sigma.max()) <= 0.2
    u = (sigma.log() - math.log(0.01)) / (math.log(0.2) - math.log(0.01))  # uniform on [0, 1)
    assert abs(float(u.mean()) - 0.5) < 0.02 and abs(float(u.var()) - 1 / 12) < 0.01

    order = EpochOrder(ShardSplit(shards / "train"), seed=0)
    whole = order.batch(0, 0, 6)
    parts = [rank_noise_and_sigma(0, TRAIN_STREAM, 3, order.batch(0, 0, 6, rank, 3), (0.01, 0.2), cpu)
             for rank in range(3)]
    global_eta, global_sigma = batch_noise_and_sigma(0, TRAIN_STREAM, 3, whole.global_atoms, 6, (0.01, 0.2), cpu)
    assert torch.equal(torch.cat([eta for eta, _ in parts]), global_eta)
    assert torch.equal(torch.cat([sigma for _, sigma in parts]), global_sigma)
    assert torch.equal(rank_noise_and_sigma(0, TRAIN_STREAM, 3, whole, (0.01, 0.2), cpu)[1], global_sigma)


def test_training_over_a_range_is_reproducible(tmp_path, shards):
    cfg = {"sigma_nm": 0.04, "sigma_range_nm": [0.02, 0.1], "model": TINY_MODEL, "batch_size": 4, "lr": 0.002,
           "max_steps": 4, "max_minutes": None, "val_every": 2, "checkpoint_every": 2, "ema_decay": None,
           "grad_clip": None, "seed": 0, "gpus": 0}  # fmt: skip
    runs = [train(shards / "train", tmp_path / name, cfg) for name in ("a", "b")]
    a, b = (jamun.model.read_checkpoint(tmp_path / name / "model.ckpt") for name in ("a", "b"))
    assert a["model_config"]["sigma_range_nm"] == [0.02, 0.1]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    losses = [json.loads((tmp_path / name / "train.json").read_text())["final_train_loss"] for name in ("a", "b")]
    assert losses[0] == losses[1] and math.isfinite(losses[0])
    assert runs[0]["model_config"]["sigma_range_nm"] == [0.02, 0.1]
    # and it is not the one-level run
    one = train(shards / "train", tmp_path / "one", {**cfg, "sigma_range_nm": None})
    assert one["final_train_loss"] != losses[0]


# ---- 5. bad values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("train_cfg, message", [
    ({"sigma_range_nm": [0.1, 0.05], "sigma_nm": 0.07}, "train.sigma_range_nm = [0.1, 0.05] must have low < high"),
    ({"sigma_range_nm": [0.05, 0.05], "sigma_nm": 0.05}, "train.sigma_range_nm = [0.05, 0.05] must have low < high"),
    ({"sigma_range_nm": [0.02, 0.1], "sigma_nm": 0.2}, "train.sigma_nm = 0.2 must lie in train.sigma_range_nm"),
    ({"sigma_range_nm": [0.02]}, "train.sigma_range_nm = [0.02]: must be"),
    ({"sigma_range_nm": [0.0, 0.1]}, "train.sigma_range_nm = [0.0, 0.1]: must be"),
])  # fmt: skip
def test_bad_ranges_are_one_line_naming_the_key(train_cfg, message):
    with pytest.raises(ValueError) as error:
        train_settings(train_cfg, "cfg")
    assert "\n" not in str(error.value) and str(error.value).startswith("cfg: ") and message in str(error.value)
    with pytest.raises(ValueError, match="train.sigma"):
        model_config({"sigma_nm": train_cfg.get("sigma_nm", 0.01), **TINY_MODEL,
                      "sigma_range_nm": train_cfg["sigma_range_nm"]})


@pytest.mark.parametrize("sample_cfg, message", [
    ({"jump_sigma_nm": 0.5}, r"sample.jump_sigma_nm = 0.5 is outside the model's noise range \[0.01, 0.2\] nm"),
    ({"sigma_nm": 0.005}, r"sample.sigma_nm = 0.005 is outside the model's noise range \[0.01, 0.2\] nm"),
    ({"jump_sigma_nm": 0.1}, r"sample.jump_sigma_nm = 0.1 must not exceed the walk's noise level 0.04 nm"),
])  # fmt: skip
def test_sample_levels_outside_the_models_range_are_named(sample_cfg, message):
    denoiser = ranged_denoiser()
    with pytest.raises(ValueError, match=message) as error:
        SampleSettings.from_config(sample_cfg).noise_levels(denoiser)
    assert "\n" not in str(error.value)
    assert SampleSettings.from_config({"sigma_nm": 0.1, "jump_sigma_nm": 0.02}).noise_levels(denoiser) == (0.1, 0.02)


def test_one_level_model_accepts_only_its_own_level():
    denoiser = Denoiser({"sigma_nm": 0.04, **TINY_MODEL}, C)
    assert SampleSettings.from_config({"sigma_nm": 0.04, "jump_sigma_nm": 0.04}).noise_levels(denoiser) == (0.04, 0.04)
    with pytest.raises(ValueError, match=r"^sample.jump_sigma_nm = 0.02 is not the model's noise level "
                                         r"sigma_nm = 0.04 nm \(trained at one level"):
        SampleSettings.from_config({"jump_sigma_nm": 0.02}).noise_levels(denoiser)
    with pytest.raises(ValueError, match=r"^cfg: sample.jump_sigma_nm = 0.05 must not exceed sample.sigma_nm = 0.04"):
        SampleSettings.from_config({"sigma_nm": 0.04, "jump_sigma_nm": 0.05}, "cfg")
