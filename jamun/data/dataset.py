"""Reading shards: integrity checks, memory-mapped frames and a deterministic epoch order.

The order of frames depends only on (seed, epoch) and the shard sizes, never on the number of
processes: global step t of an epoch covers stream positions [t B, (t + 1) B) with B the global
batch, and rank r of W takes the r-th of W equal consecutive slices. So W ranks with batch b see
exactly the frames one process with batch W b sees, in the same order (docs/design.md §4, §8), every
rank takes the same number of steps per epoch (the remainder is dropped), and a resumed run finds
its place from the step number alone.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jamun.data.graph import GraphBatch, TopologyFeatures, batch_graphs
from jamun.data.shards import MANIFEST, read_manifest, read_peptides, sha256_file

__all__ = ["ShardSplit", "FrameBatch", "EpochOrder"]


@dataclass(frozen=True)
class FrameBatch:
    """Clean frames of one rank's share of a global batch.

    Attributes
    ----------
    positions
        (N, 3) float32 nm, heavy atoms of each frame, graphs contiguous.
    graph
        The frames' :class:`GraphBatch` (CPU); None when this rank's share is empty, which only a
        final, partial validation batch can cause.
    atom_offset
        Index of this rank's first atom among all atoms of the global batch.
    global_atoms
        Number of atoms in the global batch (all ranks).
    graph_offset
        Index of this rank's first graph (frame) among all graphs of the global batch.
    global_graphs
        Number of graphs (frames) in the global batch (all ranks).
    """

    positions: torch.Tensor
    graph: GraphBatch | None
    atom_offset: int
    global_atoms: int
    graph_offset: int
    global_graphs: int


class ShardSplit:
    """The shards of one split folder, checked against the manifest and memory-mapped on demand.

    Parameters
    ----------
    split_dir
        Folder written by :func:`jamun.data.shards.write_shards`.
    verify
        Compare every shard's SHA-256 with the manifest now (reads all shard bytes once).
        Shapes are always checked when a shard is opened.
    max_open
        Shards kept memory-mapped at once; the epoch order visits shards one after another.

    Raises
    ------
    FileNotFoundError
        If the manifest, peptides.json or a shard file is missing (message names the file).
    ValueError
        If a shard's checksum or shape disagrees with the manifest (truncated or corrupt file).
    """

    def __init__(self, split_dir: Path, *, verify: bool = True, max_open: int = 2):
        self.split_dir = Path(split_dir)
        manifest_path = self.split_dir / MANIFEST
        self.manifest = read_manifest(self.split_dir)
        self.peptides, self.features = read_peptides(self.split_dir)
        self.n_atoms = np.array([f.num_atoms for f in self.features], dtype=np.int64)
        self.sizes = self.manifest["n_frames"].to_numpy(dtype=np.int64)
        self.n_frames = int(self.sizes.sum())
        self._max_open = max_open
        self._open: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        for row in self.manifest.itertuples():
            for file in (row.positions, row.frames_file):
                if not (self.split_dir / file).is_file():
                    raise FileNotFoundError(f"shard file {self.split_dir / file} listed in {manifest_path} is missing")
        if verify:
            self.verify()

    def verify(self) -> None:
        """Raise ValueError naming the first shard file whose SHA-256 differs from the manifest."""
        for row in self.manifest.itertuples():
            for file, expected in ((row.positions, row.positions_sha256), (row.frames_file, row.frames_sha256)):
                path = self.split_dir / file
                if sha256_file(path) != expected:
                    raise ValueError(
                        f"shard file {path} is corrupt or truncated: its SHA-256 differs from "
                        f"{self.split_dir / MANIFEST}; re-run the shard step"
                    )

    def shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Memory maps of shard s: positions (n_atoms, 3) float32, frame table (n_frames, 3) int64."""
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        row = self.manifest.iloc[s]
        maps = []
        for file, shape, dtype in (
            (row["positions"], (int(row["n_atoms"]), 3), np.float32),
            (row["frames_file"], (int(row["n_frames"]), 3), np.int64),
        ):
            path = self.split_dir / file
            try:
                array = np.load(path, mmap_mode="r")
            except (ValueError, OSError) as error:
                raise ValueError(f"shard file {path} is unreadable ({error}); re-run the shard step") from None
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(
                    f"shard file {path} holds {array.dtype} {array.shape}, manifest says {np.dtype(dtype)} {shape}"
                )
            maps.append(array)
        self._open[s] = (maps[0], maps[1])
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return self._open[s]

    def peptide_of(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Peptide index of frames given by (shard, row) arrays."""
        out = np.empty(len(shards), dtype=np.int64)
        for s in np.unique(shards):
            mask = shards == s
            out[mask] = self.shard(int(s))[1][rows[mask], 0]
        return out

    def frames(self, shards: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, list[TopologyFeatures]]:
        """Positions (sum of atoms, 3) float32 nm and features of frames, in the given order."""
        parts = []
        peptides = np.empty(len(shards), dtype=np.int64)
        for k, (s, r) in enumerate(zip(shards, rows)):
            pos, table = self.shard(int(s))
            peptide, _, offset = table[r]
            peptides[k] = peptide
            parts.append(pos[offset : offset + self.n_atoms[peptide]])
        return np.concatenate(parts), [self.features[p] for p in peptides]


class EpochOrder:
    """Where each stream position of an epoch lives: shards shuffled per epoch, frames per shard.

    Parameters
    ----------
    data
        The split.
    seed
        Order seed; (seed, epoch) fixes the order of an epoch.
    """

    def __init__(self, data: ShardSplit, seed: int):
        self.data = data
        self.seed = seed
        self._perm: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _shard_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.data.sizes))
        return order, np.cumsum(self.data.sizes[order])

    def _rows(self, epoch: int, shard: int) -> np.ndarray:
        key = (epoch, shard)
        if key not in self._perm:
            self._perm[key] = np.random.default_rng([self.seed, epoch, shard]).permutation(self.data.sizes[shard])
            if len(self._perm) > 2:
                self._perm.popitem(last=False)
        return self._perm[key]

    def locate(self, epoch: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) of stream positions [start, stop) of ``epoch``, each (stop - start,)."""
        if not 0 <= start <= stop <= self.data.n_frames:
            raise ValueError(f"stream positions [{start}, {stop}) outside the split's {self.data.n_frames} frames")
        order, ends = self._shard_order(epoch)
        positions = np.arange(start, stop)
        idx = np.searchsorted(ends, positions, side="right")
        shards = order[idx]
        local = positions - (ends[idx] - self.data.sizes[shards])
        rows = np.empty_like(local)
        for s in np.unique(shards):
            mask = shards == s
            rows[mask] = self._rows(epoch, int(s))[local[mask]]
        return shards, rows

    def batch(self, epoch: int, start: int, stop: int, rank: int = 0, world_size: int = 1) -> FrameBatch:
        """Rank ``rank``'s share of the global batch at stream positions [start, stop).

        The global batch is cut into ``world_size`` consecutive slices of equal size (the last
        rank takes what is left when the size does not divide, as in a final validation batch).
        """
        shards, rows = self.locate(epoch, start, stop)
        per_rank = -(-len(shards) // world_size)
        lo, hi = min(rank * per_rank, len(shards)), min((rank + 1) * per_rank, len(shards))
        atoms = self.data.n_atoms[self.data.peptide_of(shards, rows)]
        if hi == lo:
            return FrameBatch(torch.zeros(0, 3), None, int(atoms.sum()), int(atoms.sum()), len(shards), len(shards))
        positions, features = self.data.frames(shards[lo:hi], rows[lo:hi])
        return FrameBatch(
            positions=torch.from_numpy(positions),
            graph=batch_graphs(features),
            atom_offset=int(atoms[:lo].sum()),
            global_atoms=int(atoms.sum()),
            graph_offset=lo,
            global_graphs=len(shards),
        )
