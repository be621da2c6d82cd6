"""Heavy-atom frames of a split's MD trajectories, shuffled into fixed-size shards (docs/design.md §4).

Layout of one split folder (e.g. ``results/shards/train``)::

    shard_00000.positions.npy   float32 (n_atoms_in_shard, 3) nm, frames concatenated
    shard_00000.frames.npy      int64 (n_frames_in_shard, 3): peptide index, source frame, atom offset
    ...
    peptides.json               per peptide: id, sources, frame count, TopologyFeatures (atoms, bonds)
    manifest.csv                one row per shard: files, peptides, frames, atoms, sha256 checksums
    stats.json                  counts, and C (train split) - see :func:`pair_msd`

Format: plain ``.npy`` because :func:`numpy.load` memory-maps it (``mmap_mode="r"``), so a reader
touches only the frames it uses and never holds a shard in memory; it needs no extra dependency
and keeps exact float32. Frames of different peptides have different atom counts, hence the flat
positions array plus a per-frame table of offsets. Atom features and bonds are per peptide, stored
once in ``peptides.json`` instead of per frame.

Shuffling without loading the dataset (memory bounded by one shard): pass 1 only counts frames.
The split of every peptide's frames over shards of (near-)equal size is then drawn from the
multivariate hypergeometric distribution - exactly the frame counts a uniform random permutation
of all frames would put into each shard. Pass 2 streams every trajectory once in chunks and
appends each frame to its shard's block in one scratch file (positioned writes, no memory map,
so the resident set stays small). Pass 3 reads one shard at a time, shuffles its frames, writes
the final files and accumulates the statistics. Everything is written into a hidden sibling
folder that replaces the split folder only when complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np
import pandas as pd

from jamun.data.graph import TopologyFeatures, topology_features
from jamun.errors import bad_file

__all__ = [
    "PAIR_CUTOFF_NM",
    "SPLITS",
    "pair_msd",
    "write_shards",
    "read_manifest",
    "read_peptides",
    "sha256_file",
]

SPLITS = ("train", "val")
PAIR_CUTOFF_NM = 1.0
CHUNK_FRAMES = 1000  # frames read from a trajectory at a time (capped at one shard)
MANIFEST = "manifest.csv"
STATS = "stats.json"
PEPTIDES = "peptides.json"


@dataclass(frozen=True)
class _Source:
    peptide: str
    trajectory: Path
    topology: Path
    features: TopologyFeatures
    n_frames: int  # after stride

    @property
    def n_atoms(self) -> int:
        return self.features.num_atoms


def sha256_file(path: Path, block_bytes: int = 1 << 18) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def pair_msd(frames: np.ndarray, cutoff_nm: float = PAIR_CUTOFF_NM) -> np.ndarray:
    """Per frame, the mean squared distance over atom pairs i < j closer than ``cutoff_nm``.

    frames: (n_frames, n_atoms, 3) nm. Returns (n_frames,) nm^2, NaN for a frame without pairs.
    C (docs/design.md §4) is the mean of this over all training frames; the reference implementation
    uses these pairs, the JAMUN paper's eq. 10 uses graph edges instead.
    """
    frames = np.asarray(frames, dtype=np.float64)
    i, j = np.triu_indices(frames.shape[1], k=1)
    d2 = ((frames[:, i] - frames[:, j]) ** 2).sum(-1)  # [n_frames, n_pairs]
    close = d2 < cutoff_nm**2
    with np.errstate(invalid="ignore"):
        return np.where(close, d2, 0.0).sum(1) / close.sum(1)


MANIFEST_COLUMNS = ("split", "shard", "positions", "frames_file", "n_frames", "n_atoms", "peptides",
                    "positions_sha256", "frames_sha256")
RESHARD = "rerun `jamun shard` for this split"


def read_manifest(split_dir: Path) -> pd.DataFrame:
    """The split's manifest, one row per shard in shard order; a damaged one is refused by name."""
    path = Path(split_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"shard manifest {path} not found; run `jamun shard` for this split")
    try:
        manifest = pd.read_csv(path, encoding="utf-8")
    except (UnicodeDecodeError, ValueError) as error:  # pandas' parser errors are ValueErrors
        raise bad_file(path, f"not a shard manifest ({type(error).__name__}: {error})", RESHARD) from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing or manifest.empty:
        raise bad_file(path, f"not a shard manifest (missing columns {missing})" if missing else "lists no shard",
                       RESHARD)
    return manifest.sort_values("shard").reset_index(drop=True)


def read_peptides(split_dir: Path) -> tuple[list[str], list[TopologyFeatures]]:
    """Peptide ids and their heavy-atom features, in the order of the shards' peptide index."""
    path = Path(split_dir) / PEPTIDES
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `jamun shard` for this split")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_file(path, f"not the peptide list of a shard split ({error})", RESHARD) from None

    def field(name: str, value):
        if isinstance(value, str):
            return value
        array = np.asarray(value, dtype=np.int64)
        return array.reshape(-1, 2) if name == "bonds" else array  # no bonds loads as shape (0,)

    features = [TopologyFeatures(**{k: field(k, v) for k, v in e["features"].items()}) for e in entries]
    return [e["peptide"] for e in entries], features


def _features_json(features: TopologyFeatures) -> dict:
    return {k: v if isinstance(v, str) else np.asarray(v).tolist() for k, v in dataclasses.asdict(features).items()}


def _count_frames(path: Path, stride: int) -> int:
    with mdtraj.open(str(path)) as handle:
        return math.ceil(len(handle) / stride)


def _inspect(peptide: str, trajectory: Path, topology: Path, stride: int) -> _Source:
    for path in (trajectory, topology):
        if not Path(path).is_file():
            raise FileNotFoundError(f"peptide {peptide}: {path} not found")
    features = topology_features(mdtraj.load_topology(str(topology)))
    return _Source(peptide, Path(trajectory), Path(topology), features, _count_frames(trajectory, stride))


def _stream(source: _Source, stride: int, chunk: int):
    """Yield (first strided frame index, heavy-atom xyz (k, n, 3) float32) chunks of a trajectory."""
    start = 0
    try:
        chunks = mdtraj.iterload(
            str(source.trajectory),
            top=str(source.topology),
            chunk=chunk,
            stride=stride,
            atom_indices=source.features.heavy_atom_indices,
        )
        for traj in chunks:
            yield start, traj.xyz.astype(np.float32, copy=False)
            start += traj.n_frames
    except (ValueError, OSError) as error:
        raise ValueError(f"peptide {source.peptide}: cannot read {source.trajectory} with {source.topology}: {error}")
    if start != source.n_frames:
        raise ValueError(
            f"peptide {source.peptide}: {source.trajectory} yielded {start} frames, its header counted "
            f"{source.n_frames} (stride {stride}); is the file truncated?"
        )


def _shard_sizes(n_frames: int, frames_per_shard: int) -> np.ndarray:
    """Sizes of ceil(n / frames_per_shard) shards differing by at most one frame."""
    n_shards = math.ceil(n_frames / frames_per_shard)
    sizes = np.full(n_shards, n_frames // n_shards, dtype=np.int64)
    sizes[: n_frames % n_shards] += 1
    return sizes


def _allocate(rng: np.random.Generator, peptide_frames: Sequence[int], shard_sizes: np.ndarray) -> np.ndarray:
    """Frames of each peptide in each shard, (n_peptides, n_shards), as a uniform shuffle would give.

    Drawing peptides one after another from the shards' remaining capacities (multivariate
    hypergeometric) has the same distribution as cutting a uniformly random permutation of all
    frames into consecutive shards, without ever materialising that permutation.
    """
    remaining = shard_sizes.copy()
    counts = np.zeros((len(peptide_frames), len(shard_sizes)), dtype=np.int64)
    for p, n in enumerate(peptide_frames):
        counts[p] = rng.multivariate_hypergeometric(remaining, n) if n else 0
        remaining -= counts[p]
    return counts


class _Scratch:
    """Peptide-blocked, unshuffled shards in two flat scratch files filled by positioned writes."""

    def __init__(self, folder: Path, counts: np.ndarray, n_atoms: np.ndarray):
        self.counts = counts
        self.n_atoms = n_atoms
        # Block (p, s) starts after all blocks of earlier shards and earlier peptides of shard s.
        frames_flat = counts.T.reshape(-1)  # shard-major
        atoms_flat = (counts * n_atoms[:, None]).T.reshape(-1)
        shape = counts.T.shape
        self.frame_start = np.concatenate([[0], np.cumsum(frames_flat)[:-1]]).reshape(shape).T
        self.atom_start = np.concatenate([[0], np.cumsum(atoms_flat)[:-1]]).reshape(shape).T
        self.shard_frame_start = self.frame_start[0]
        self.shard_atom_start = self.atom_start[0]
        self.positions_path = folder / "scratch.positions"
        self.frames_path = folder / "scratch.frames"
        self._pos = os.open(self.positions_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._idx = os.open(self.frames_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, p: int, s: int, first: int, xyz: np.ndarray, source_frames: np.ndarray) -> None:
        """Write frames ``first, first + 1, ...`` of block (p, s)."""
        atom = self.atom_start[p, s] + first * self.n_atoms[p]
        os.pwrite(self._pos, np.ascontiguousarray(xyz, dtype=np.float32), int(atom) * 12)
        frame = self.frame_start[p, s] + first
        os.pwrite(self._idx, np.ascontiguousarray(source_frames, dtype=np.int64), int(frame) * 8)

    def read_shard(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions (n_atoms, 3), peptide index (n,), source frame (n,) of shard s, peptide-blocked."""
        n_frames = int(self.counts[:, s].sum())
        n_atoms = int((self.counts[:, s] * self.n_atoms).sum())
        pos = np.fromfile(self.positions_path, np.float32, n_atoms * 3, offset=int(self.shard_atom_start[s]) * 12)
        src = np.fromfile(self.frames_path, np.int64, n_frames, offset=int(self.shard_frame_start[s]) * 8)
        peptide = np.repeat(np.arange(len(self.n_atoms)), self.counts[:, s])
        return pos.reshape(-1, 3), peptide, src

    def close(self) -> None:
        os.close(self._pos)
        os.close(self._idx)
        self.positions_path.unlink()
        self.frames_path.unlink()


def _scatter(scratch: _Scratch, sources: Sequence[_Source], rng: np.random.Generator, stride: int, chunk: int) -> None:
    """Pass 2: stream each trajectory once, appending every frame to its shard's block."""
    n_shards = scratch.counts.shape[1]
    for p, source in enumerate(sources):
        shard_of = np.repeat(np.arange(n_shards), scratch.counts[p])
        rng.shuffle(shard_of)  # which of this peptide's frames land in which shard
        filled = np.zeros(n_shards, dtype=np.int64)
        for start, xyz in _stream(source, stride, chunk):
            owners = shard_of[start : start + len(xyz)]
            for s in np.unique(owners):
                rows = np.flatnonzero(owners == s)
                scratch.write(p, s, filled[s], xyz[rows], (start + rows) * stride)
                filled[s] += len(rows)


def _gather(pos: np.ndarray, n_atoms: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder variable-size frames (atom counts ``n_atoms``): new positions and atom offsets."""
    old_offsets = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    sizes = n_atoms[order]
    new_offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.arange(sizes.sum()) - np.repeat(new_offsets, sizes)
    return pos[np.repeat(old_offsets[order], sizes) + within], new_offsets


def write_shards(
    split: str,
    trajectories: Sequence[tuple[str, Path, Path]],
    out_dir: Path,
    *,
    frames_per_shard: int,
    seed: int,
    stride: int = 1,
) -> dict:
    """Shard one split's trajectories into ``out_dir`` (the split folder, e.g. results/shards/train).

    Parameters
    ----------
    split
        ``"train"`` or ``"val"``; seeds the shuffle together with ``seed`` and names the split.
    trajectories
        (peptide id, trajectory file, protein-only topology PDB) per peptide.
    frames_per_shard
        Target frames per shard; shards differ by at most one frame.
    seed
        Shuffle seed (with ``split``): same inputs and seed give byte-identical shards.
    stride
        Keep every ``stride``-th frame of each trajectory.

    Returns
    -------
    The ``stats.json`` content: counts, the mean pair MSD ``pair_msd_nm2`` and, for ``train``,
    ``C`` (equal to it). ``manifest.csv``, ``peptides.json`` and the shards are written too.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if frames_per_shard < 1 or stride < 1:
        raise ValueError(f"frames_per_shard and stride must be >= 1, got {frames_per_shard} and {stride}")
    peptides = [t[0] for t in trajectories]
    if not peptides or len(set(peptides)) != len(peptides):
        raise ValueError(f"split {split}: need one or more distinct peptides, got {peptides}")
    out_dir = Path(out_dir)
    sources = [_inspect(p, Path(traj), Path(top), stride) for p, traj, top in trajectories]
    n_frames = sum(s.n_frames for s in sources)
    if n_frames == 0:
        raise ValueError(f"split {split}: trajectories of {peptides} hold no frames")

    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    counts = _allocate(rng, [s.n_frames for s in sources], _shard_sizes(n_frames, frames_per_shard))

    work = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        stats = _write_split(work, split, sources, counts, rng, stride, frames_per_shard, seed)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # nothing half-written survives
        raise
    if out_dir.exists():
        stale = out_dir.parent / f".{out_dir.name}.stale"
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(out_dir, stale)
        shutil.rmtree(stale)
    os.replace(work, out_dir)
    return stats


def _write_split(
    work: Path, split: str, sources: Sequence[_Source], counts: np.ndarray, rng: np.random.Generator,
    stride: int, frames_per_shard: int, seed: int,
) -> dict:  # fmt: skip
    """Passes 2 and 3 of :func:`write_shards` into the (hidden) folder ``work``; returns the stats."""
    peptides = [s.peptide for s in sources]
    n_atoms = np.array([s.n_atoms for s in sources], dtype=np.int64)
    scratch = _Scratch(work, counts, n_atoms)
    _scatter(scratch, sources, rng, stride, min(CHUNK_FRAMES, frames_per_shard))

    rows, msd_sum, msd_frames = [], 0.0, 0
    for s in range(counts.shape[1]):
        pos, peptide, src = scratch.read_shard(s)
        order = rng.permutation(len(peptide))
        pos, offsets = _gather(pos, n_atoms[peptide], order)
        table = np.stack([peptide[order], src[order], offsets], axis=1)
        msd = _shard_pair_msd(pos, table, n_atoms)
        msd_sum += float(np.nansum(msd))
        msd_frames += int(np.isfinite(msd).sum())
        name = f"shard_{s:05d}"
        np.save(work / f"{name}.positions.npy", pos)
        np.save(work / f"{name}.frames.npy", table)
        rows.append(
            {
                "shard": s,
                "positions": f"{name}.positions.npy",
                "frames_file": f"{name}.frames.npy",
                "n_frames": len(table),
                "n_atoms": len(pos),
                "peptides": ";".join(peptides[p] for p in np.unique(peptide)),
                "positions_sha256": sha256_file(work / f"{name}.positions.npy"),
                "frames_sha256": sha256_file(work / f"{name}.frames.npy"),
            }
        )
    scratch.close()

    (work / PEPTIDES).write_text(
        json.dumps(
            [
                {
                    "peptide": s.peptide,
                    "trajectory": str(s.trajectory),
                    "topology": str(s.topology),
                    "n_frames": s.n_frames,
                    "features": _features_json(s.features),
                }
                for s in sources
            ],
            indent=1,
        )
    )
    manifest = pd.DataFrame(rows)
    manifest.insert(0, "split", split)
    manifest.to_csv(work / MANIFEST, index=False)
    stats = {
        "split": split,
        "frames": int(counts.sum()),
        "peptides": len(sources),
        "shards": len(rows),
        "frames_per_shard": frames_per_shard,
        "stride": stride,
        "seed": seed,
        "pair_cutoff_nm": PAIR_CUTOFF_NM,
        "pair_msd_nm2": msd_sum / msd_frames,
        "frames_per_peptide": {s.peptide: s.n_frames for s in sources},
    }
    if split == "train":
        stats["C"] = stats["pair_msd_nm2"]
    (work / STATS).write_text(json.dumps(stats, indent=1))
    return stats


def _shard_pair_msd(pos: np.ndarray, table: np.ndarray, n_atoms: np.ndarray, max_pairs: int = 1 << 14) -> np.ndarray:
    """pair_msd of every frame of a shard, (n_frames,), per peptide in chunks of frames.

    Chunks of at most ``max_pairs`` (frame, pair) rows bound the temporaries to well under a
    shard: an 8-residue peptide has ~2400 heavy-atom pairs.
    """
    msd = np.empty(len(table))
    for p in np.unique(table[:, 0]):
        rows = np.flatnonzero(table[:, 0] == p)
        chunk = max(1, max_pairs // (n_atoms[p] * (n_atoms[p] - 1) // 2 or 1))
        for lo in range(0, len(rows), chunk):
            part = rows[lo : lo + chunk]
            msd[part] = pair_msd(pos[table[part, 2][:, None] + np.arange(n_atoms[p])])  # [k, n, 3]
    return msd
