"""The denoiser: equivariance (not parity), batching, preconditioning, checkpoints, bad inputs,
equality with e3nn's tensor product, parameter counts."""

from __future__ import annotations

import math
from pathlib import Path

import mdtraj
import pytest
import torch
import yaml
from e3nn import nn as e3nn_nn
from e3nn import o3

import jamun.model
from jamun.data.graph import (
    NUM_ATOM_NAMES,
    NUM_ELEMENTS,
    NUM_RESIDUE_INDICES,
    NUM_RESIDUE_TYPES,
    GraphBatch,
    batch_graphs,
    center_positions,
    graph_edges,
    graph_mean,
    topology_features,
)
from jamun.model import Denoiser, Preconditioning, model_config
from jamun.errors import InputError
from jamun.model.checkpoint import load_weights
from jamun.model.convolution import ChannelwiseConvolution, GroupedEdges, TensorProductConvolution
from jamun.model.embedding import NUM_NOISE_FEATURES
from jamun.peptides import build_peptide
from jamun.schema import section_settings

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

SIGMA = 0.04
C = 0.25

# Heavy atoms of capped ALA-ALA and SER-GLY as built by jamun.peptides (Angstrom).
DATA = Path(__file__).parent / "data"  # structures as PDB text
PDB_AA = (DATA / "ace_ala_ala_nme_heavy.pdb").read_text()
PDB_SG = (DATA / "ace_ser_gly_nme_heavy.pdb").read_text()


def small_config(**overrides) -> dict:
    config = dict(sigma_nm=SIGMA, hidden_irreps="16x0e + 4x1e", num_layers=3, r_cut_nm=0.5, num_radial=8,
                  radial_hidden=16, max_num_neighbors=1000)  # fmt: skip
    return {**config, **overrides}


def make_denoiser(seed: int = 0, **overrides) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(small_config(**overrides), C)


@pytest.fixture(scope="module")
def denoiser() -> Denoiser:
    """A randomly initialised small denoiser shared by the tests that do not change it."""
    return make_denoiser()


@pytest.fixture(scope="module", params=["uvw", "uvu"])
def each_denoiser(request: pytest.FixtureRequest) -> Denoiser:
    """A randomly initialised small denoiser with each tensor product (model.tensor_product)."""
    return make_denoiser(tensor_product=request.param)


@pytest.fixture(scope="module")
def peptides(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{"AA": (features, positions (n, 3) nm), "SG": ...}."""
    folder = tmp_path_factory.mktemp("pdb")
    result = {}
    for name, text in [("AA", PDB_AA), ("SG", PDB_SG)]:
        (folder / f"{name}.pdb").write_text(text)
        trajectory = mdtraj.load_pdb(folder / f"{name}.pdb")
        features = topology_features(trajectory.topology)
        result[name] = (features, torch.tensor(trajectory.xyz[0][features.heavy_atom_indices]))
    return result


def noisy_batch(peptides: dict, names: list[str], seed: int) -> tuple[GraphBatch, torch.Tensor, torch.Tensor]:
    """Graph, clean positions x and noisy y = x + sigma * eta for the named peptides."""
    generator = torch.Generator().manual_seed(seed)
    graph = batch_graphs([peptides[name][0] for name in names])
    x = torch.cat([peptides[name][1] for name in names])
    return graph, x, x + SIGMA * torch.randn(x.shape, generator=generator)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm()).detach())


def test_network_output_is_rotation_and_translation_equivariant(each_denoiser: Denoiser, peptides: dict) -> None:
    denoiser = each_denoiser
    graph, _, y = noisy_batch(peptides, ["AA", "SG"], seed=0)
    output = denoiser.network_output(y, graph)
    assert float(output.detach().abs().max()) > 1e-2
    torch.manual_seed(1)
    for _ in range(3):
        rotation, shift = o3.rand_matrix(), torch.randn(3)
        moved = denoiser.network_output(y @ rotation.T + shift, graph)
        assert relative_error(moved, output @ rotation.T) < 1e-4


def test_xhat_is_rotation_and_translation_equivariant(denoiser: Denoiser, peptides: dict) -> None:
    graph, _, y = noisy_batch(peptides, ["SG", "AA"], seed=1)
    torch.manual_seed(2)
    rotation, shift = o3.rand_matrix(), torch.randn(3)
    moved = denoiser.xhat(y @ rotation.T + shift, graph)
    expected = denoiser.xhat(y, graph) @ rotation.T + shift
    assert torch.allclose(moved, expected, atol=1e-5)


def test_mirror_images_differ(each_denoiser: Denoiser, peptides: dict) -> None:
    denoiser = each_denoiser
    graph, _, y = noisy_batch(peptides, ["AA", "SG"], seed=2)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    output = denoiser.network_output(y, graph)
    assert relative_error(denoiser.network_output(y @ mirror, graph), output @ mirror) > 1e-2


def test_batched_equals_per_graph_and_permutes(each_denoiser: Denoiser, peptides: dict) -> None:
    denoiser = each_denoiser
    graph, _, y = noisy_batch(peptides, ["AA", "SG", "AA"], seed=3)
    batched = denoiser.xhat(y, graph)
    blocks = torch.split(torch.arange(graph.num_atoms), torch.bincount(graph.batch).tolist())
    for name, atoms in zip(["AA", "SG", "AA"], blocks):
        alone = denoiser.xhat(y[atoms], batch_graphs([peptides[name][0]]))
        assert torch.allclose(batched[atoms], alone, atol=1e-5)

    order = [2, 0, 1]
    permuted_graph = batch_graphs([peptides[["AA", "SG", "AA"][k]][0] for k in order])
    permuted_atoms = torch.cat([blocks[k] for k in order])
    permuted = denoiser.xhat(y[permuted_atoms], permuted_graph)
    assert torch.allclose(permuted, batched[permuted_atoms], atol=1e-5)


@pytest.mark.parametrize("sigma, data_scale", [(0.04, 0.25), (0.1, 0.05), (0.01, 2.0)])
def test_preconditioning_scalings_are_the_least_squares_ones(sigma: float, data_scale: float) -> None:
    """For pair differences d with E|d|^2 = C and d_y = d + sigma (eta_i - eta_j), sampled: c_in d_y has
    unit mean square, c_skip is the least-squares coefficient of d on d_y, c_out^2 the mean square of
    the residual d - c_skip d_y (the network's target has unit scale); c_noise is log10(sigma / nm),
    the convention trained checkpoints depend on."""
    p = Preconditioning(sigma=sigma, C=data_scale)
    generator = torch.Generator().manual_seed(0)
    d = math.sqrt(data_scale / 3) * torch.randn(10**6, 3, generator=generator, dtype=torch.float64)
    noise = torch.randn(2, 10**6, 3, generator=generator, dtype=torch.float64)
    d_y = d + sigma * (noise[0] - noise[1])
    assert float((p.c_in * d_y).square().sum(1).mean()) == pytest.approx(1.0, rel=1e-2)
    least_squares = float((d * d_y).sum() / d_y.square().sum())
    standard_error = float(((d - least_squares * d_y).square().mean() / d_y.square().sum()).sqrt())
    assert abs(p.c_skip - least_squares) < 5 * standard_error
    assert float((d - p.c_skip * d_y).square().sum(1).mean()) == pytest.approx(p.c_out**2, rel=1e-2)
    assert p.c_noise == pytest.approx(math.log10(sigma))


def test_zero_network_gives_c_skip_times_y(peptides: dict) -> None:
    denoiser = make_denoiser()
    with torch.no_grad():
        denoiser.network.readout.weight.zero_()
    graph, x, y = noisy_batch(peptides, ["AA", "SG"], seed=4)
    y = y + torch.tensor([1.0, -2.0, 0.5])
    centred, centroids = center_positions(y, graph)
    c_skip = denoiser.preconditioning.c_skip
    assert torch.allclose(denoiser.xhat(y, graph), c_skip * centred + centroids[graph.batch], atol=1e-6)
    assert torch.allclose(denoiser.xhat(centred, graph), c_skip * centred, atol=1e-6)

    x_centred, _ = center_positions(x, graph)
    squared = (c_skip * centred - x_centred).square().sum(1)
    expected = torch.stack([squared[graph.batch == g].mean() for g in range(2)]).mean()
    expected = expected / denoiser.preconditioning.c_out**2
    assert float(denoiser.loss(x_centred, centred, graph).detach()) == pytest.approx(float(expected), rel=1e-5)


@torch.no_grad()
def test_bond_term_is_the_mean_squared_bond_vector_error_per_graph(peptides: dict) -> None:
    denoiser = make_denoiser()
    with torch.no_grad():
        denoiser.network.readout.weight.zero_()  # xhat = c_skip * y
    graph, x, y = noisy_batch(peptides, ["AA", "SG"], seed=6)
    x, _ = center_positions(x, graph)
    y, _ = center_positions(y, graph)
    xhat = denoiser.preconditioning.c_skip * y
    i, j = graph.bonds
    error = ((xhat[i] - xhat[j]) - (x[i] - x[j])).square().sum(1)
    per_graph = torch.stack([error[graph.batch[i] == g].mean() for g in range(2)])
    weight = 7.0
    expected = denoiser.loss(x, y, graph) + weight * per_graph.mean() / denoiser.preconditioning.c_out**2
    assert float(denoiser.loss(x, y, graph, bond_weight=weight)) == pytest.approx(float(expected), rel=1e-5)
    assert float(per_graph.min()) > 0
    # A mirror image has every bond length right but not the bond vectors: the term sees it.
    mirror = (x * torch.tensor([-1.0, 1.0, 1.0])) / denoiser.preconditioning.c_skip  # xhat = mirrored x
    bond_term = denoiser.loss(x, mirror, graph, bond_weight=1.0) - denoiser.loss(x, mirror, graph)
    assert float(bond_term * denoiser.preconditioning.c_out**2) > 0.01  # nm^2


def test_score_is_tweedie_without_autograd(denoiser: Denoiser, peptides: dict) -> None:
    graph, _, y = noisy_batch(peptides, ["SG", "AA"], seed=5)
    y.requires_grad_(True)
    score = denoiser.score(y, graph)
    assert not score.requires_grad
    assert torch.allclose(score, (denoiser.xhat(y, graph) - y).detach() / SIGMA**2, atol=1e-3)
    for g in range(graph.num_graphs):
        assert float(score[graph.batch == g].mean(0).abs().max()) < 1e-3


def test_c_in_normalises_built_structures(tmp_path: Path) -> None:
    """With C from the pair set of built peptides, c_in scales their noisy pair differences to unit mean square."""
    torch.manual_seed(6)
    clean, noisy = [], []
    for sequence in ["AA", "GW"]:
        built = mdtraj.load(build_peptide(sequence, tmp_path / f"{sequence}.pdb"))
        x = torch.tensor(built.atom_slice(built.topology.select("not element H")).xyz[0], dtype=torch.float64)
        i, j = torch.triu_indices(len(x), len(x), offset=1)
        pairs = (x[i] - x[j]).norm(dim=1) < 1.0  # the pair set of C (docs/design.md §10)
        i, j = i[pairs], j[pairs]
        clean.append(x[i] - x[j])
        for _ in range(20):
            y = x + SIGMA * torch.randn_like(x)
            noisy.append(y[i] - y[j])
    data_scale = float(torch.cat(clean).square().sum(1).mean())
    c_in = Preconditioning(sigma=SIGMA, C=data_scale).c_in
    assert float((c_in * torch.cat(noisy)).square().sum(1).mean()) == pytest.approx(1.0, abs=0.05)


def test_checkpoint_round_trip(peptides: dict, tmp_path: Path) -> None:
    denoiser = make_denoiser(seed=7)
    path = jamun.model.save(denoiser, tmp_path / "sub" / "model.ckpt", step=12, history=[0.5, 0.25])
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.ckpt"]
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 12 and raw["C"] == C and raw["model_config"] == denoiser.config

    loaded = jamun.model.load(path)
    assert (loaded.sigma, loaded.C, loaded.config) == (denoiser.sigma, denoiser.C, denoiser.config)
    graph, _, y = noisy_batch(peptides, ["AA", "SG"], seed=7)
    assert torch.equal(loaded.xhat(y, graph), denoiser.xhat(y, graph))
    assert jamun.model.read_checkpoint(path)["history"] == [0.5, 0.25]


def test_checkpoint_errors(denoiser: Denoiser, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        jamun.model.save(denoiser, tmp_path / "model.ckpt", C=1.0)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        jamun.model.load(tmp_path / "missing.ckpt")
    torch.save({"state_dict": denoiser.state_dict()}, tmp_path / "bare.ckpt")
    with pytest.raises(ValueError, match="model_config"):
        jamun.model.load(tmp_path / "bare.ckpt")


def test_config_forms_and_defaults() -> None:
    flat = model_config({"sigma_nm": 0.04, "num_layers": 4})
    nested = model_config({"sigma_nm": 0.04, "batch_size": 32, "model": {"num_layers": 4}})
    assert flat == nested
    assert flat["hidden_irreps"] == "32x0e + 8x1e" and flat["num_layers"] == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_layer": 3}, "unknown key 'num_layer' in train.model settings"),
        ({"hidden_irreps": "16x0e + 4x1o"}, "0e and 1e"),
        ({"hidden_irreps": "16x0e"}, "0e and 1e"),
        ({"hidden_irreps": "sixteen"}, "not an e3nn irreps"),
        ({"num_layers": 1}, "train.model.num_layers = 1: must be an integer >= 2"),
        ({"radial_hidden": 0}, "radial_hidden"),
        ({"r_cut_nm": -0.5}, "r_cut_nm"),
        ({"sigma_nm": 0.0}, "sigma"),
    ],
)
def test_bad_config(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Denoiser(small_config(**overrides), C)


def test_bad_positions(denoiser: Denoiser, peptides: dict) -> None:
    graph, _, y = noisy_batch(peptides, ["AA", "SG"], seed=8)
    with pytest.raises(ValueError, match="NaN"):
        denoiser.xhat(torch.where(torch.arange(len(y))[:, None] == 20, float("nan"), y), graph)
    with pytest.raises(ValueError, match="shape"):
        denoiser.xhat(y[:-1], graph)
    with pytest.raises(ValueError, match="float64"):
        denoiser.score(y.double(), graph)
    with pytest.raises(ValueError, match="C must be"):
        Denoiser(small_config(), -1.0)


@torch.no_grad()
@pytest.mark.parametrize("num_vectors_in", [3, 0])  # 0: the first layer
def test_convolution_equals_e3nn_fully_connected_tensor_product(num_vectors_in: int) -> None:
    """Messages equal e3nn's FullyConnectedTensorProduct(h_j, Y(r_ij), W_ij) (default normalisations),
    W_ij from FullyConnectedNet([f, k, k, weight_numel]) holding the module's parameters, and the two
    have the same number of parameters."""
    torch.manual_seed(9)
    a, b, s, v, k, f, n, e = 5, num_vectors_in, 6, 4, 7, 8, 9, 40
    conv = TensorProductConvolution(a, b, s, v, f, k)
    tp = o3.FullyConnectedTensorProduct(
        f"{a}x0e + {b}x1e", "1x0e + 1x1e", f"{s}x0e + {v}x1e", shared_weights=False, internal_weights=False
    )
    m_s, m_v = conv.weight_from_scalars, conv.weight_from_vectors  # [a, k, s | v], [b, k, v | s | v]
    blocks = {  # path (in1, in2, out) -> its block [mul_in1, k, mul_out] of M
        ("0e", "0e", "0e"): m_s[:, :, :s],
        ("0e", "1e", "1e"): m_s[:, :, s:],
        ("1e", "0e", "1e"): m_v[:, :, :v],
        ("1e", "1e", "0e"): m_v[:, :, v : v + s],
        ("1e", "1e", "1e"): m_v[:, :, v + s :],
    }
    paths = [
        (str(tp.irreps_in1[i.i_in1].ir), str(tp.irreps_in2[i.i_in2].ir), str(tp.irreps_out[i.i_out].ir))
        for i in tp.instructions
    ]
    assert sorted(paths) == sorted(blocks)
    # e3nn's weights: per path, (mul_in1, mul_in2 = 1, mul_out) flattened, paths in instruction order.
    last_layer = torch.cat([blocks[path].transpose(0, 1).reshape(k, -1) for path in paths], dim=1)
    radial = e3nn_nn.FullyConnectedNet([f, k, k, tp.weight_numel], torch.nn.functional.silu)
    radial.load_state_dict({**conv.edge_mlp.state_dict(), "layer2.weight": last_layer})
    assert k * tp.weight_numel == m_s.numel() + m_v.numel()
    assert sum(p.numel() for p in conv.parameters()) == sum(p.numel() for p in radial.parameters())

    h = torch.randn(n, a + 3 * b)
    edges = GroupedEdges.from_edges(torch.randint(0, n, (2, e)), torch.zeros(e, dtype=torch.bool), n)
    harmonics = o3.spherical_harmonics([0, 1], torch.randn(e, 3), normalize=True, normalization="component")
    edge_features = torch.randn(e, f)
    messages = conv(h, harmonics[:, 1:], edge_features, edges)
    reference = tp(h[edges.index[0]], harmonics, radial(edge_features))
    assert float(reference.abs().max()) > 1.0
    assert torch.allclose(messages, reference, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("num_vectors_in", [3, 0])  # 0: the first layer
def test_channelwise_convolution_equals_e3nn_uvu_tensor_product(num_vectors_in: int) -> None:
    """Messages equal e3nn's TensorProduct(h_j, Y(r_ij), W_ij) with one "uvu" instruction per path
    into its own output block (default normalisations), W_ij from FullyConnectedNet([f, k, k,
    weight_numel]), followed by o3.Linear to the output irreps, holding the module's parameters."""
    torch.manual_seed(13)
    a, b, s, v, k, f, n, e = 5, num_vectors_in, 6, 4, 7, 8, 9, 40
    conv = ChannelwiseConvolution(a, b, s, v, f, k)
    irreps_in = o3.Irreps(f"{a}x0e + {b}x1e")
    # The paths in the module's weight order; each writes its own block of the intermediate irreps.
    paths = [(0, 0, "0e"), (0, 1, "1e"), (1, 0, "1e"), (1, 1, "0e"), (1, 1, "1e")][: 5 if b else 2]
    irreps_mid = o3.Irreps([(irreps_in[i_in1].mul, ir) for i_in1, _, ir in paths])
    tp = o3.TensorProduct(
        irreps_in, "1x0e + 1x1e", irreps_mid, [(i1, i2, out, "uvu", True) for out, (i1, i2, _) in enumerate(paths)],
        shared_weights=False, internal_weights=False,
    )  # fmt: skip
    assert tp.weight_numel == 2 * a + 3 * b
    linear = o3.Linear(irreps_mid, f"{s}x0e + {v}x1e")
    # Rows of the module's mixing matrices that each intermediate block uses.
    l_s, l_v = conv.linear_scalars, conv.linear_vectors  # [a | b, s], [a | b | b, v]
    blocks = [l_s[:a], l_v[:a], l_v[a : a + b], l_s[a:], l_v[a + b :]]
    assert [(ins.i_in, ins.i_out) for ins in linear.instructions] == [(i, ir.l) for i, (_, ir) in enumerate(irreps_mid)]
    linear.weight.copy_(torch.cat([blocks[i].reshape(-1) for i in range(len(paths))]))
    radial = e3nn_nn.FullyConnectedNet([f, k, k, tp.weight_numel], torch.nn.functional.silu)
    radial.load_state_dict(conv.edge_mlp.state_dict())
    assert sum(p.numel() for p in conv.parameters()) == sum(
        p.numel() for p in [*radial.parameters(), *linear.parameters()]
    )

    h = torch.randn(n, a + 3 * b)
    edges = GroupedEdges.from_edges(torch.randint(0, n, (2, e)), torch.zeros(e, dtype=torch.bool), n)
    harmonics = o3.spherical_harmonics([0, 1], torch.randn(e, 3), normalize=True, normalization="component")
    edge_features = torch.randn(e, f)
    messages = conv.mix(conv(h, harmonics[:, 1:], edge_features, edges))
    reference = linear(tp(h[edges.index[0]], harmonics, radial(edge_features)))
    assert float(reference.abs().max()) > 1.0
    assert torch.allclose(messages, reference, atol=1e-5)


def test_output_is_continuous_when_a_pair_crosses_the_cutoff(denoiser: Denoiser, peptides: dict) -> None:
    graph, x, _ = noisy_batch(peptides, ["AA"], seed=10)
    outputs, num_edges = [], []
    for distance in (0.5 - 1e-5, 0.5 + 1e-5):
        y = x.clone()
        y[14] = y[0] + distance * torch.nn.functional.normalize(x[14] - x[0], dim=0)  # atoms 0, 14 not bonded
        outputs.append(denoiser.network_output(y, graph))
        num_edges.append(graph_edges(y, graph, 0.5, 1000)[0].shape[1])
    assert num_edges[0] == num_edges[1] + 2
    assert relative_error(outputs[1], outputs[0]) < 1e-3


def test_training_steps_beat_the_zero_network(peptides: dict) -> None:
    """A few Adam steps on one noisy batch fit it better than F = 0 (xhat = c_skip y) does."""
    denoiser = make_denoiser(seed=11)
    graph, x, y = noisy_batch(peptides, ["AA", "SG"], seed=11)
    x, _ = center_positions(x, graph)
    y, _ = center_positions(y, graph)
    p = denoiser.preconditioning
    zero_network_loss = float(graph_mean((p.c_skip * y - x).square().sum(1), graph).mean()) / p.c_out**2
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=5e-3)
    for _ in range(20):
        loss = denoiser.loss(x, y, graph)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.8 * zero_network_loss


def parameter_formula(config: dict) -> int:
    """Parameter count from the multiplicities: hidden S x 0e + V x 1e, so each convolution outputs
    s = S + V scalars (V of them gates) and v = V vectors from a x 0e + b x 1e inputs."""
    hidden = o3.Irreps(config["hidden_irreps"])
    S, V = hidden.count("0e"), hidden.count("1e")
    s, v = S + V, V
    k, r, w = config["radial_hidden"], config["num_radial"], config["endpoint_features"]
    channelwise = config["tensor_product"] == "uvu"
    f = 2 * r + 2 * w  # edge features: radial basis, bond-type embedding, both endpoints' projections
    embedding = (NUM_ELEMENTS + NUM_ATOM_NAMES + NUM_RESIDUE_TYPES + NUM_RESIDUE_INDICES) * S
    noise_mlp = 2 * NUM_NOISE_FEATURES + NUM_NOISE_FEATURES * (NUM_NOISE_FEATURES + 1)
    total = embedding + noise_mlp + 2 * r + V  # + bond-type table (2 x r) + readout (V x 1e -> 1e)
    for a, b in [(S, 0)] + [(S, V)] * (config["num_layers"] - 1):
        if channelwise:  # one weight per path and channel, then a linear map to s x 0e + v x 1e
            total += k * (2 * a + 3 * b) + f * k + k * k  # edge MLP [f, k, k, 2a + 3b] (no biases)
            total += (a + b) * s + (a + 2 * b) * v  # (a + b) x 0e + (a + 2b) x 1e -> s x 0e + v x 1e
        else:
            paths = a * s + a * v + b * v + b * s + b * v  # 0e0e->0e, 0e1e->1e, 1e0e->1e, 1e1e->0e, 1e1e->1e
            total += k * paths + f * k + k * k  # M, and the edge MLP (no biases)
        total += (a + 1) * 2 * w  # endpoint projection
        total += (NUM_NOISE_FEATURES + 1) * (S + V) + (S + V)  # noise scale, skip gate
        total += a * S + b * V  # skip connection
    return total


@pytest.mark.parametrize(
    "config_file, endpoint_features, tensor_product, expected",
    [
        ("paper.yaml", None, "uvw", 8_191_192),
        ("paper.yaml", 0, "uvw", 8_178_712),  # "paper" in README.md, docs/design.md, benchmarks/README.md
        ("config.yaml", None, "uvw", 192_200),  # docs/design.md, benchmarks/README.md
        ("config.yaml", 0, "uvw", 189_080),  # "demo" in README.md, docs/design.md
        # Channel-wise: per layer k (2a + 3b) + (a + b) s + (a + 2b) v instead of k (a (s + v) + b (s + 2v)).
        # Paper (S, V, k) = (120, 32, 74), s = 152, v = 32: first layer (a, b) = (120, 0): 17,760 + 22,080
        # instead of 1,633,920; three more (120, 32): 24,864 + 28,992 instead of 2,145,408 each.
        ("paper.yaml", None, "uvu", 322_456),  # = 8_191_192 - 1_594_080 - 3 * 2_091_552
        ("paper.yaml", 0, "uvu", 309_976),
        # Demo (32, 8, 32), s = 40, v = 8: (32, 0): 2,048 + 1,536 instead of 49,152; two more (32, 8):
        # 2,816 + 1,984 instead of 63,488 each.
        ("config.yaml", None, "uvu", 29_256),  # = 192_200 - 45_568 - 2 * 58_688
        ("config.yaml", 0, "uvu", 26_136),
    ],
)
def test_parameter_counts(config_file: str, endpoint_features: int | None, tensor_product: str, expected: int) -> None:
    """The models of the shipped configs (and without endpoint features, as the docs' sizes were
    counted), with either tensor product, have the recorded sizes, equal to the analytic count."""
    path = CONFIG_DIR / config_file
    train = section_settings("train", yaml.safe_load(path.read_text())["train"], str(path))
    if endpoint_features is not None:
        train["model"]["endpoint_features"] = endpoint_features
    train["model"]["tensor_product"] = tensor_product
    denoiser = Denoiser(train, C)
    assert denoiser.num_parameters() == parameter_formula(denoiser.config) == expected


def test_bfloat16_autocast_stays_close_to_float32(denoiser: Denoiser, peptides: dict) -> None:
    graph, _, y = noisy_batch(peptides, ["AA", "SG"], seed=12)
    with torch.no_grad():
        reference = denoiser.network_output(y, graph)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_precision = denoiser.network_output(y, graph)
            xhat = denoiser.xhat(y, graph)
    assert relative_error(low_precision.float(), reference) < 5e-2
    assert xhat.dtype == torch.float32 and torch.isfinite(xhat).all()


@pytest.mark.parametrize("damage, complaint", [
    (lambda path: path.write_bytes(path.read_bytes()[:2000]), "not a readable model checkpoint"),
    (lambda path: path.write_bytes(bytes(range(256)) * 40), "not a readable model checkpoint"),
    (lambda path: torch.save({"weights": torch.zeros(3)}, path), "lacks the keys"),
])
def test_a_damaged_checkpoint_is_named_in_one_line(tmp_path: Path, damage, complaint) -> None:
    """Truncated, random or foreign files: one line naming the file (never torch's advice to load
    with weights_only=False, which would run arbitrary code)."""
    path = jamun.model.save(make_denoiser(), tmp_path / "model.ckpt")
    damage(path)
    with pytest.raises(InputError) as raised:
        jamun.model.load(path)
    message = str(raised.value)
    assert message.startswith(str(path)) and complaint in message and "\n" not in message
    assert "weights_only=False" not in message


def test_weights_of_another_architecture_name_the_keys(tmp_path: Path) -> None:
    path = jamun.model.save(make_denoiser(), tmp_path / "model.ckpt")
    wider = make_denoiser(hidden_irreps="24x0e + 4x1e")
    with pytest.raises(InputError, match=r"model.ckpt: weights of another architecture: other shapes \[") as raised:
        load_weights(wider, jamun.model.read_checkpoint(path)["state_dict"], path)
    assert "train.model" in str(raised.value)
