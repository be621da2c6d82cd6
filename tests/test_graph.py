"""Heavy-atom graph features, batching and edges, on topologies built here with mdtraj."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from jamun.data.graph import (
    ATOM_NAMES,
    ELEMENTS,
    MAX_RESIDUE_INDEX,
    RESIDUE_TYPES,
    batch_graphs,
    center_positions,
    graph_edges,
    topology_features,
)

# (residue, [(atom, element, bonded-to atom of this residue or "-X" for X of the previous one)])
ACE_ALA_NME = [
    ("ACE", [("CH3", "C", None), ("H1", "H", "CH3"), ("H2", "H", "CH3"), ("H3", "H", "CH3"), ("C", "C", "CH3"),
             ("O", "O", "C")]),
    ("ALA", [("N", "N", "-C"), ("H", "H", "N"), ("CA", "C", "N"), ("HA", "H", "CA"), ("CB", "C", "CA"),
             ("HB1", "H", "CB"), ("HB2", "H", "CB"), ("HB3", "H", "CB"), ("C", "C", "CA"), ("O", "O", "C")]),
    ("NME", [("N", "N", "-C"), ("H", "H", "N"), ("C", "C", "N"), ("H1", "H", "C"), ("H2", "H", "C"),
             ("H3", "H", "C")]),
]  # fmt: skip


def build_topology(residues: list) -> mdtraj.Topology:
    """A one-chain topology from the (residue, atoms) description above."""
    topology = mdtraj.Topology()
    chain = topology.add_chain()
    previous: dict[str, mdtraj.core.topology.Atom] = {}
    for residue_name, atoms in residues:
        residue = topology.add_residue(residue_name, chain)
        current = {}
        for name, symbol, partner in atoms:
            atom = topology.add_atom(name, mdtraj.element.get_by_symbol(symbol), residue)
            current[name] = atom
            if partner is not None:
                topology.add_bond(atom, previous[partner[1:]] if partner.startswith("-") else current[partner])
        previous = current
    return topology


def glycine_chain(n: int) -> list:
    return [("GLY", [("N", "N", "-C" if i else None), ("CA", "C", "N"), ("C", "C", "CA"), ("O", "O", "C")])
            for i in range(n)]  # fmt: skip


def random_positions(n: int, seed: int, spread: float = 0.6) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).uniform(0, spread, (n, 3)), dtype=torch.float32)


def test_features_of_capped_alanine() -> None:
    features = topology_features(build_topology(ACE_ALA_NME))
    names = ["CH3", "C", "O", "N", "CA", "CB", "C", "O", "N", "C"]
    assert features.num_atoms == 10
    assert features.atom_name.tolist() == [ATOM_NAMES.index(name) for name in names]
    assert features.element.tolist() == [ELEMENTS.index(name[0]) for name in names]
    residues = ["ACE"] * 3 + ["ALA"] * 5 + ["NME"] * 2
    assert features.residue_type.tolist() == [RESIDUE_TYPES.index(name) for name in residues]
    assert features.residue_index.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
    assert features.heavy_atom_indices.tolist() == [0, 4, 5, 6, 8, 10, 14, 15, 16, 18]
    assert features.bonds.tolist() == [[0, 1], [1, 2], [1, 3], [3, 4], [4, 5], [4, 6], [6, 7], [6, 8], [8, 9]]
    assert features.sequence == "A"
    for array in (features.element, features.bonds, features.heavy_atom_indices):
        assert array.dtype == np.int64


def test_bonds_come_back_from_a_heavy_atom_pdb(tmp_path: Path) -> None:
    topology = build_topology(ACE_ALA_NME)
    heavy = topology.select("not element H")
    trajectory = mdtraj.Trajectory(random_positions(topology.n_atoms, 0).numpy(), topology).atom_slice(heavy)
    trajectory.save_pdb(tmp_path / "heavy.pdb")
    reloaded = topology_features(mdtraj.load_pdb(tmp_path / "heavy.pdb").topology)
    original = topology_features(topology)
    assert reloaded.bonds.tolist() == original.bonds.tolist()
    assert reloaded.atom_name.tolist() == original.atom_name.tolist()


def test_unknown_names_go_to_the_other_bucket_and_variants_to_their_residue() -> None:
    residues = [
        ("ACE", [("CH3", "C", None), ("C", "C", "CH3"), ("O", "O", "C")]),
        ("MSE", [("N", "N", "-C"), ("CA", "C", "N"), ("SE", "Se", "CA"), ("C", "C", "CA"), ("O", "O", "C")]),
        ("HID", [("N", "N", "-C"), ("CA", "C", "N"), ("C", "C", "CA"), ("O", "O", "C")]),
        ("NME", [("N", "N", "-C"), ("C", "C", "N")]),
    ]
    features = topology_features(build_topology(residues))
    selenium = 5
    assert features.element[selenium] == len(ELEMENTS)
    assert features.atom_name[selenium] == len(ATOM_NAMES)
    assert set(features.residue_type[3:8].tolist()) == {len(RESIDUE_TYPES)}
    assert set(features.residue_type[8:12].tolist()) == {RESIDUE_TYPES.index("HIS")}
    assert features.sequence == "XH"


def test_residue_index_is_clipped() -> None:
    features = topology_features(build_topology(glycine_chain(MAX_RESIDUE_INDEX + 5)))
    assert features.residue_index.max() == MAX_RESIDUE_INDEX
    assert features.residue_index[:8].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert features.sequence == "G" * (MAX_RESIDUE_INDEX + 5)


def test_bad_topologies_raise() -> None:
    water = [("HOH", [("O", "O", None), ("H1", "H", "O"), ("H2", "H", "O")])]
    with pytest.raises(ValueError, match="water"):
        topology_features(build_topology(ACE_ALA_NME + water))
    with pytest.raises(ValueError, match="no heavy atoms"):
        topology_features(build_topology([("HHH", [("H1", "H", None), ("H2", "H", "H1")])]))
    unbonded = build_topology(ACE_ALA_NME)
    unbonded._bonds = []
    with pytest.raises(ValueError, match="no bonds"):
        topology_features(unbonded)


def test_batch_concatenates_in_order() -> None:
    alanine = topology_features(build_topology(ACE_ALA_NME))
    glycines = topology_features(build_topology(glycine_chain(3)))
    graph = batch_graphs([alanine, glycines, alanine])
    assert graph.num_graphs == 3
    assert graph.num_atoms == 10 + 12 + 10
    assert graph.batch.tolist() == [0] * 10 + [1] * 12 + [2] * 10
    assert torch.equal(graph.atom_name[10:22], torch.from_numpy(glycines.atom_name))
    pairs = set(map(tuple, graph.bonds.t().tolist()))
    expected = {(int(i) + offset, int(j) + offset) for f, offset in [(alanine, 0), (glycines, 10), (alanine, 22)]
                for i, j in f.bonds}  # fmt: skip
    assert pairs == expected | {(j, i) for i, j in expected}
    assert graph.bonds.shape[1] == 2 * len(expected)
    assert graph.to("cpu").batch.tolist() == graph.batch.tolist()
    with pytest.raises(ValueError, match="at least one"):
        batch_graphs([])


def test_edges_are_bonds_union_radius_pairs() -> None:
    features = topology_features(build_topology(ACE_ALA_NME))
    graph = batch_graphs([features, features])
    pos = random_positions(graph.num_atoms, 1, spread=1.0)

    only_bonds, is_bond = graph_edges(pos, graph, r_cut=1e-3, max_num_neighbors=100)
    assert bool(is_bond.all())
    assert set(map(tuple, only_bonds.t().tolist())) == set(map(tuple, graph.bonds.t().tolist()))

    edges, is_bond = graph_edges(pos, graph, r_cut=0.5, max_num_neighbors=100)
    pairs = list(map(tuple, edges.t().tolist()))
    assert len(pairs) == len(set(pairs))
    bonds = set(map(tuple, graph.bonds.t().tolist()))
    close = (pos[:, None] - pos[None]).norm(dim=-1) < 0.5
    same_graph = graph.batch[:, None] == graph.batch[None]
    radius_pairs = {(j, i) for j, i in (close & same_graph).nonzero().tolist() if i != j}
    assert set(pairs) == radius_pairs | bonds
    assert bonds - radius_pairs, "positions should stretch some bond past r_cut"
    assert [pair in bonds for pair in pairs] == is_bond.tolist()


def test_centring_and_nan_positions() -> None:
    features = topology_features(build_topology(ACE_ALA_NME))
    graph = batch_graphs([features, features])
    pos = random_positions(graph.num_atoms, 2) + torch.tensor([5.0, -3.0, 1.0])
    centred, centroids = center_positions(pos, graph)
    assert torch.allclose(centred[:10].mean(0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(centroids[1], pos[10:].mean(0))
    pos[13, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*graphs \[1\]"):
        graph_edges(pos, graph, 0.5, 100)
