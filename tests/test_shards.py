"""Shards: every frame exactly once, shuffled and mixed, checksums, C, bounded memory, integrity."""

import tracemalloc
from pathlib import Path

import mdtraj
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist

from jamun.data.dataset import EpochOrder, ShardSplit
from jamun.data.shards import read_peptides, sha256_file, write_shards
from jamun.errors import InputError

# ACE-ALA-NME with hydrogens (built with jamun.peptides.build_peptide), coordinates in Å.
DATA = Path(__file__).parent / "data"  # structures as PDB text
ALA_PDB = (DATA / "ace_ala_nme.pdb").read_text()

# ACE-GLY-ASN-NME, heavy atoms only.
GN_PDB = (DATA / "ace_gly_asn_nme_heavy.pdb").read_text()


def write_trajectory(
    folder: Path, peptide: str, pdb_text: str, n_frames: int, seed: int, noise_nm: float = 0.02,
    torsion_deg: float = 0.0,
):  # fmt: skip
    """A synthetic trajectory: the PDB structure, randomly rotated, shifted and jiggled per frame.

    With ``torsion_deg`` > 0 every backbone phi/psi bond is also twisted, per frame, into one of
    two basins (-60 or +60 deg away from the built value, spread ``torsion_deg``), so frames
    differ in conformation while bond lengths and angles stay those of the structure.
    Returns (peptide, traj.xtc, topology.pdb) as write_shards takes them.
    """
    folder = Path(folder) / peptide
    folder.mkdir(parents=True, exist_ok=True)
    topology_pdb = folder / "topology.pdb"
    topology_pdb.write_text(pdb_text)
    ref = mdtraj.load(str(topology_pdb))
    rng = np.random.default_rng(seed)
    frames = np.repeat(ref.xyz[0][None].astype(np.float64), n_frames, axis=0)
    if torsion_deg > 0:
        for axis, moving in _backbone_torsions(ref.topology):
            basin = rng.choice([-60.0, 60.0], size=n_frames)
            angles = np.deg2rad(basin + rng.normal(scale=torsion_deg, size=n_frames))
            frames = _twist(frames, axis, moving, angles)
    q, _ = np.linalg.qr(rng.normal(size=(n_frames, 3, 3)))
    centred = frames - frames.mean(1, keepdims=True)
    xyz = np.einsum("fij,faj->fai", q, centred) + rng.normal(scale=1.0, size=(n_frames, 1, 3))
    xyz += rng.normal(scale=noise_nm, size=xyz.shape)
    mdtraj.Trajectory(xyz.astype(np.float32), ref.topology).save_xtc(str(folder / "traj.xtc"))
    return peptide, folder / "traj.xtc", topology_pdb


def _backbone_torsions(topology) -> list[tuple[tuple[int, int], np.ndarray]]:
    """(bond (b, c), atoms on c's side) for the N-CA and CA-C bonds of every non-cap residue."""
    neighbours = {a.index: set() for a in topology.atoms}
    for a, b in topology.bonds:
        neighbours[a.index].add(b.index)
        neighbours[b.index].add(a.index)
    out = []
    for residue in topology.residues:
        if residue.name in ("ACE", "NME"):
            continue
        names = {a.name: a.index for a in residue.atoms}
        for b, c in ((names["N"], names["CA"]), (names["CA"], names["C"])):
            side, todo = {c}, [c]
            while todo:
                for n in neighbours[todo.pop()] - side - {b}:
                    side.add(n)
                    todo.append(n)
            out.append(((b, c), np.array(sorted(side))))
    return out


def _twist(frames: np.ndarray, axis: tuple[int, int], moving: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate atoms ``moving`` of each frame by ``angles`` (rad) about the bond ``axis`` (Rodrigues)."""
    origin = frames[:, axis[1]][:, None]
    k = frames[:, axis[1]] - frames[:, axis[0]]
    k = (k / np.linalg.norm(k, axis=1, keepdims=True))[:, None]
    v = frames[:, moving] - origin
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    rotated = v * cos + np.cross(k, v) * sin + k * (k * v).sum(-1, keepdims=True) * (1 - cos)
    out = frames.copy()
    out[:, moving] = rotated + origin
    return out


@pytest.fixture(scope="module")
def two_peptides(tmp_path_factory):
    root = tmp_path_factory.mktemp("md")
    return [write_trajectory(root, "A", ALA_PDB, 150, seed=1), write_trajectory(root, "GN", GN_PDB, 91, seed=2)]


def heavy_frames(peptide_source, stride: int = 1) -> np.ndarray:
    _, traj, top = peptide_source
    t = mdtraj.load(str(traj), top=str(top), stride=stride)
    return t.xyz[:, t.topology.select("element != H")]


def read_all(split_dir: Path) -> tuple[list[str], list[tuple[int, int, np.ndarray]]]:
    """(peptides, [(peptide index, source frame, positions)]) in shard order."""
    data = ShardSplit(split_dir)
    out = []
    for s in range(len(data.sizes)):
        pos, table = data.shard(s)
        for peptide, source, offset in table:
            out.append((int(peptide), int(source), np.array(pos[offset : offset + data.n_atoms[peptide]])))
    return data.peptides, out


def test_every_frame_once_mixed_shuffled_and_exact(tmp_path, two_peptides):
    stats = write_shards("train", two_peptides, tmp_path / "train", frames_per_shard=50, seed=0)
    manifest = pd.read_csv(tmp_path / "train" / "manifest.csv")
    assert stats["frames"] == 241 and stats["shards"] == 5 and stats["peptides"] == 2
    assert sorted(manifest["n_frames"]) == [48, 48, 48, 48, 49]
    assert (manifest["peptides"] == "A;GN").all()  # every shard mixes both peptides
    peptides, frames = read_all(tmp_path / "train")
    assert peptides == ["A", "GN"]
    reference = {p: heavy_frames(src) for p, src in zip(peptides, two_peptides)}
    seen = {(p, f) for p, f, _ in frames}
    assert len(seen) == len(frames) == 241
    assert seen == {(0, f) for f in range(150)} | {(1, f) for f in range(91)}
    for p, f, pos in frames:
        np.testing.assert_array_equal(pos, reference[peptides[p]][f])
    sources = [f for p, f, _ in frames if p == 0]
    assert sources != sorted(sources)  # shuffled, not in trajectory order
    for row in manifest.itertuples():
        assert row.positions_sha256 == sha256_file(tmp_path / "train" / row.positions)
        assert row.frames_sha256 == sha256_file(tmp_path / "train" / row.frames_file)
    _, features = read_peptides(tmp_path / "train")
    assert [f.num_atoms for f in features] == [10, 17] and features[1].bonds.shape == (16, 2)


def test_same_seed_same_bytes_other_seed_other_order(tmp_path, two_peptides):
    checksums = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_shards("val", two_peptides, tmp_path / name, frames_per_shard=100, seed=seed)
        checksums.append(pd.read_csv(tmp_path / name / "manifest.csv")["positions_sha256"].tolist())
    assert checksums[0] == checksums[1]
    assert checksums[0] != checksums[2]


def test_stride_keeps_every_kth_frame(tmp_path, two_peptides):
    stats = write_shards("train", two_peptides, tmp_path / "train", frames_per_shard=1000, seed=0, stride=4)
    assert stats["frames"] == 38 + 23 and stats["shards"] == 1
    peptides, frames = read_all(tmp_path / "train")
    reference = heavy_frames(two_peptides[1], stride=4)
    gn = sorted((f, pos) for p, f, pos in frames if p == 1)
    assert [f for f, _ in gn] == list(range(0, 91, 4))
    np.testing.assert_array_equal(np.stack([pos for _, pos in gn]), reference)


def test_c_matches_direct_pair_computation(tmp_path, two_peptides):
    stats = write_shards("train", two_peptides, tmp_path / "train", frames_per_shard=40, seed=0)
    per_frame = []
    for source in two_peptides:
        for frame in heavy_frames(source).astype(np.float64):
            d = pdist(frame)
            per_frame.append(np.mean(d[d < 1.0] ** 2))
    assert stats["C"] == pytest.approx(np.mean(per_frame), rel=1e-9)
    assert 0.1 < stats["C"] < 0.6  # nm^2: a real capped peptide, not a unit mistake


def test_memory_is_bounded_by_a_shard_not_the_dataset(tmp_path):
    sources = [write_trajectory(tmp_path / "md", p, GN_PDB, 30000, seed=k) for k, p in enumerate(("GN", "NG"))]
    dataset_bytes = 2 * 30000 * 17 * 3 * 4  # 12 MB of float32 positions
    shard_bytes = 2000 * 17 * 3 * 4  # 0.4 MB
    tracemalloc.start()
    write_shards("train", sources, tmp_path / "train", frames_per_shard=2000, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(list((tmp_path / "train").glob("*.positions.npy"))) == 30
    assert peak < dataset_bytes / 5, f"peak {peak / 1e6:.1f} MB for a {dataset_bytes / 1e6:.1f} MB dataset"
    assert peak < 6 * shard_bytes


def test_epoch_order_visits_every_frame_once_and_depends_on_seed_and_epoch(tmp_path, two_peptides):
    write_shards("train", two_peptides, tmp_path / "train", frames_per_shard=50, seed=0)
    order = EpochOrder(ShardSplit(tmp_path / "train"), seed=1)
    shards, rows = order.locate(0, 0, 241)
    assert len(set(zip(shards.tolist(), rows.tolist()))) == 241
    assert not np.array_equal(rows, order.locate(1, 0, 241)[1])
    assert np.array_equal(rows, EpochOrder(ShardSplit(tmp_path / "train"), seed=1).locate(0, 0, 241)[1])
    # Rank slices of a global batch concatenate to the one-process batch.
    whole = order.batch(0, 10, 18)
    parts = [order.batch(0, 10, 18, rank=r, world_size=2) for r in range(2)]
    assert np.array_equal(np.concatenate([p.positions for p in parts]), whole.positions)
    assert parts[1].atom_offset == parts[0].positions.shape[0] and parts[0].global_atoms == whole.positions.shape[0]


@pytest.mark.parametrize("damage", ["missing", "flipped", "truncated"])
def test_damaged_shard_is_named(tmp_path, two_peptides, damage):
    write_shards("train", two_peptides, tmp_path / "train", frames_per_shard=100, seed=0)
    victim = tmp_path / "train" / "shard_00001.positions.npy"
    data = bytearray(victim.read_bytes())
    if damage == "missing":
        victim.unlink()
    elif damage == "flipped":
        data[-5] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:
        victim.write_bytes(bytes(data[:-120]))
    error = FileNotFoundError if damage == "missing" else ValueError
    with pytest.raises(error, match="shard_00001.positions.npy"):
        ShardSplit(tmp_path / "train")
    if damage == "truncated":  # without checksums the shape check still names it
        with pytest.raises(ValueError, match="shard_00001.positions.npy"):
            ShardSplit(tmp_path / "train", verify=False).shard(1)


def test_bad_inputs_are_named(tmp_path, two_peptides):
    with pytest.raises(ValueError, match="split must be one of"):
        write_shards("test", two_peptides, tmp_path / "x", frames_per_shard=10, seed=0)
    with pytest.raises(FileNotFoundError, match="nothere.xtc"):
        write_shards("train", [("A", tmp_path / "nothere.xtc", two_peptides[0][2])], tmp_path / "x",
                     frames_per_shard=10, seed=0)  # fmt: skip
    with pytest.raises(ValueError, match="distinct"):
        write_shards("train", [two_peptides[0], two_peptides[0]], tmp_path / "x", frames_per_shard=10, seed=0)


@pytest.mark.parametrize("file, damage, complaint", [
    ("manifest.csv", b"\xff\xfe\x00garbage", "not a shard manifest"),
    ("manifest.csv", b"a,b\n1,2\n", "missing columns"),
    ("peptides.json", b"{[", "not the peptide list"),
])
def test_damaged_split_records_are_named(tmp_path, two_peptides, file, damage, complaint):
    """A garbage manifest or peptide list: one line naming the file and `jamun shard` to rerun."""
    write_shards("train", two_peptides, tmp_path / "train", frames_per_shard=100, seed=0)
    (tmp_path / "train" / file).write_bytes(damage)
    with pytest.raises(InputError) as raised:
        ShardSplit(tmp_path / "train")
    message = str(raised.value)
    assert message.startswith(str(tmp_path / "train" / file)) and complaint in message
    assert "jamun shard" in message and "\n" not in message
