"""Heavy-atom graphs of capped peptides: integer atom features, covalent bonds, batching, edges.

One peptide's topology becomes a :class:`TopologyFeatures` (numpy); several, possibly different
peptides become one :class:`GraphBatch` (torch). :func:`graph_edges` adds the geometric part:
bonds ∪ pairs closer than ``r_cut`` (JAMUN, Daigavane et al. 2024; docs/design.md §5).

Vocabulary policy: an element, atom name or residue name outside the vocabularies below maps to
the last index of its vocabulary ("other"), so modified residues or unusual caps still run; the
sequence shows them as ``X``. Protonation variants (HID, CYX, ASH, ...) map to their standard
residue. Water is rejected: graphs are protein-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import mdtraj
import numpy as np
import torch

from jamun.data.radius import radius_graph
from jamun.sequence import THREE_TO_ONE

ELEMENTS = ("C", "N", "O", "S")
ATOM_NAMES = (
    "N", "CA", "C", "O", "OXT", "CB", "CG", "CG1", "CG2", "CD", "CD1", "CD2", "CE", "CE1", "CE2",
    "CE3", "CZ", "CZ2", "CZ3", "CH2", "CH3", "ND1", "ND2", "NE", "NE1", "NE2", "NH1", "NH2", "NZ",
    "OD1", "OD2", "OE1", "OE2", "OG", "OG1", "OH", "SD", "SG",
)  # fmt: skip
CAPS = ("ACE", "NME")
RESIDUE_TYPES = (*THREE_TO_ONE, *CAPS)
RESIDUE_ALIASES = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",
    "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS", "NMA": "NME",
}  # fmt: skip
MAX_RESIDUE_INDEX = 15  # residue positions beyond this (counted from the chain start) share one index

# Vocabulary sizes include the trailing "other" bucket.
NUM_ELEMENTS = len(ELEMENTS) + 1
NUM_ATOM_NAMES = len(ATOM_NAMES) + 1
NUM_RESIDUE_TYPES = len(RESIDUE_TYPES) + 1
NUM_RESIDUE_INDICES = MAX_RESIDUE_INDEX + 1

FEATURE_NAMES = ("element", "atom_name", "residue_type", "residue_index")
_TENSOR_FIELDS = (*FEATURE_NAMES, "bonds", "batch")


def _index(vocabulary: Sequence[str], name: str) -> int:
    """Position of ``name`` in ``vocabulary``, or the "other" index ``len(vocabulary)``."""
    try:
        return vocabulary.index(name)
    except ValueError:
        return len(vocabulary)


@dataclass(frozen=True)
class TopologyFeatures:
    """Heavy-atom features of one peptide (numpy, all int64).

    Attributes
    ----------
    element, atom_name, residue_type, residue_index
        (n,) vocabulary indices (see module docstring for the "other" bucket).
    bonds
        (n_bonds, 2) covalent bonds between heavy atoms, indices into the heavy atoms, i < j.
    heavy_atom_indices
        (n,) index of each heavy atom in the full topology.
    sequence
        One-letter sequence without caps; ``X`` for residues outside the vocabulary.
    """

    element: np.ndarray
    atom_name: np.ndarray
    residue_type: np.ndarray
    residue_index: np.ndarray
    bonds: np.ndarray
    heavy_atom_indices: np.ndarray
    sequence: str

    @property
    def num_atoms(self) -> int:
        return int(self.element.shape[0])


def topology_features(topology: mdtraj.Topology) -> TopologyFeatures:
    """Heavy-atom features and bonds of a protein-only mdtraj topology (with or without H).

    Raises
    ------
    ValueError
        If the topology has no heavy atoms, contains water, or has several heavy atoms but no
        bonds between them (e.g. a PDB read without standard-residue bond templates).
    """
    if any(residue.is_water for residue in topology.residues):
        raise ValueError("topology contains water; pass the protein-only topology (topology.subset(...))")
    heavy = [atom for atom in topology.atoms if atom.element.atomic_number > 1]
    if not heavy:
        raise ValueError(f"topology has no heavy atoms ({topology.n_atoms} atoms in total)")

    chain_start = {chain.index: min(r.index for r in chain.residues) for chain in topology.chains if chain.n_residues}
    residue_names = [RESIDUE_ALIASES.get(atom.residue.name, atom.residue.name) for atom in heavy]
    columns = {
        "element": [_index(ELEMENTS, atom.element.symbol) for atom in heavy],
        "atom_name": [_index(ATOM_NAMES, atom.name) for atom in heavy],
        "residue_type": [_index(RESIDUE_TYPES, name) for name in residue_names],
        "residue_index": [
            min(atom.residue.index - chain_start[atom.residue.chain.index], MAX_RESIDUE_INDEX) for atom in heavy
        ],
    }

    full_to_heavy = {atom.index: k for k, atom in enumerate(heavy)}
    bonds = sorted(
        {
            tuple(sorted((full_to_heavy[a.index], full_to_heavy[b.index])))
            for a, b in topology.bonds
            if a.index in full_to_heavy and b.index in full_to_heavy
        }
    )
    if len(heavy) > 1 and not bonds:
        raise ValueError(
            f"topology has {len(heavy)} heavy atoms but no bonds between them; load it from a PDB with "
            "standard residue names (mdtraj adds standard bonds) or call topology.create_standard_bonds()"
        )

    sequence = "".join(
        THREE_TO_ONE.get(RESIDUE_ALIASES.get(r.name, r.name), "X") for r in topology.residues if r.name not in CAPS
    )
    return TopologyFeatures(
        **{name: np.asarray(values, dtype=np.int64) for name, values in columns.items()},
        bonds=np.asarray(bonds, dtype=np.int64).reshape(-1, 2),
        heavy_atom_indices=np.asarray([atom.index for atom in heavy], dtype=np.int64),
        sequence=sequence,
    )


@dataclass(frozen=True)
class GraphBatch:
    """A batch of heavy-atom graphs, atoms of each graph contiguous and in input order.

    Attributes
    ----------
    element, atom_name, residue_type, residue_index
        (N,) LongTensors of vocabulary indices.
    bonds
        (2, n_bond_edges) LongTensor of covalent bonds as global atom indices, both directions.
    batch
        (N,) LongTensor, graph id of each atom (non-decreasing).
    num_graphs
        Number of graphs B.
    """

    element: torch.Tensor
    atom_name: torch.Tensor
    residue_type: torch.Tensor
    residue_index: torch.Tensor
    bonds: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    @property
    def num_atoms(self) -> int:
        return int(self.batch.shape[0])

    @property
    def device(self) -> torch.device:
        return self.batch.device

    def to(self, device: torch.device | str) -> "GraphBatch":
        """A copy with every tensor on ``device``."""
        return replace(self, **{name: getattr(self, name).to(device) for name in _TENSOR_FIELDS})


def batch_graphs(features: Sequence[TopologyFeatures]) -> GraphBatch:
    """Concatenate peptides (in order) into one :class:`GraphBatch` on the CPU."""
    if len(features) == 0:
        raise ValueError("batch_graphs needs at least one TopologyFeatures, got an empty sequence")
    sizes = np.array([f.num_atoms for f in features])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    bonds = np.concatenate([f.bonds + offset for f, offset in zip(features, offsets)])  # [n_bonds, 2]
    bonds = np.concatenate([bonds, bonds[:, ::-1]]).T  # [2, 2 * n_bonds]
    return GraphBatch(
        **{name: torch.from_numpy(np.concatenate([getattr(f, name) for f in features])) for name in FEATURE_NAMES},
        bonds=torch.from_numpy(np.ascontiguousarray(bonds)),
        batch=torch.from_numpy(np.repeat(np.arange(len(features), dtype=np.int64), sizes)),
        num_graphs=len(features),
    )


def check_positions(pos: torch.Tensor, graph: GraphBatch) -> None:
    """Raise ValueError unless ``pos`` is a finite float (N, 3) tensor matching ``graph``."""
    if pos.shape != (graph.num_atoms, 3):
        raise ValueError(f"positions must have shape ({graph.num_atoms}, 3) to match the graph, got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise ValueError(f"positions must be a float tensor, got dtype {pos.dtype}")
    if not torch.isfinite(pos).all():
        bad = torch.unique(graph.batch[~torch.isfinite(pos).all(dim=1)]).tolist()
        raise ValueError(f"positions contain NaN or infinite coordinates (graphs {bad[:10]})")


def graph_mean(values: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
    """Per-graph mean of per-atom ``values`` (N, ...) -> (B, ...)."""
    sums = values.new_zeros((graph.num_graphs, *values.shape[1:])).index_add_(0, graph.batch, values)
    counts = torch.bincount(graph.batch, minlength=graph.num_graphs).clamp(min=1)
    return sums / counts.view(-1, *([1] * (values.ndim - 1))).to(values.dtype)


def center_positions(pos: torch.Tensor, graph: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract each graph's centroid: returns (centred (N, 3), centroids (B, 3))."""
    centroids = graph_mean(pos, graph)
    return pos - centroids[graph.batch], centroids


def graph_edges(
    pos: torch.Tensor, graph: GraphBatch, r_cut: float, max_num_neighbors: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Message-passing edges: covalent bonds ∪ pairs closer than ``r_cut``.

    Parameters
    ----------
    pos
        (N, 3) positions in nm (the raw, unscaled noisy coordinates y).
    r_cut
        Radius cutoff in nm.
    max_num_neighbors
        Cap on radius neighbours per atom, see :func:`jamun.data.radius.radius_graph`.

    Returns
    -------
    edge_index
        (2, E) LongTensor, row 0 source j, row 1 target i; each edge once.
    is_bond
        (E,) bool, True for covalent bonds.
    """
    check_positions(pos, graph)
    radius_edges = radius_graph(pos, r_cut, graph.batch, max_num_neighbors)
    n = graph.num_atoms
    bond_keys = graph.bonds[0] * n + graph.bonds[1]
    radius_is_bond = torch.isin(radius_edges[0] * n + radius_edges[1], bond_keys)
    long_bonds = ~torch.isin(bond_keys, radius_edges[0] * n + radius_edges[1])  # bonds stretched past r_cut
    edge_index = torch.cat([radius_edges, graph.bonds[:, long_bonds]], dim=1)
    is_bond = torch.cat([radius_is_bond, torch.ones(int(long_bonds.sum()), dtype=torch.bool, device=pos.device)])
    return edge_index, is_bond
