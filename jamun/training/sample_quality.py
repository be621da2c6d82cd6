"""Sample quality as the training signal: a short walk-jump run on validation peptides.

The denoising loss says little about whether walk-jump sampling works (a validation scaled RMSD
of 0.42 came with samples that were not molecules). So during training the current model walks
a few chains of each validation peptide from its minimized built structure, exactly as
``jamun sample`` does, and its jumps are scored against the peptide's own MD:

- ``valid``: fraction of jumps with every heavy-atom bond within ``bond_tolerance_nm`` of its mean
  MD length and L-chirality at every CA (:mod:`jamun.analysis.validity`);
- ``left_molecule``: fraction of chains with a jump where some bond exceeds twice its MD length;
- ``jsd_rama``: mean over residues of the 2D (φ, ψ) JSD in nats against the MD frames.

``sample_error = (1 - valid) + jsd_rama``, averaged over the peptides, is what the trainer
minimizes when it picks the checkpoint to keep: both terms are 0 for perfect samples.

Chains start either on the built structure, as ``jamun sample`` does, or on MD frames spread
evenly over the peptide's trajectory (``start="md"``). From the built structure a few hundred steps
measure mostly how far the walk has come (the JSD stays near 0.5 throughout training); from MD
frames they measure how far the walk drifts away from MD (the "drift JSD"), which is 0 for a
model whose walk keeps the MD distribution and grows with every error of the learned landscape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np
import torch

from jamun.analysis.dihedrals import backbone_dihedrals
from jamun.analysis.jsd import jsd_angles
from jamun.analysis.validity import bond_length_ok, chains_left_molecule, l_chirality_ok
from jamun.data.graph import TopologyFeatures, topology_features
from jamun.geometry import bond_lengths
from jamun.sampling.sample import SampleSettings, walk_jump_peptides

__all__ = ["ValidationPeptide", "load_validation_peptide", "sample_quality", "QUALITY_COLUMNS"]

# sample_check.start -> the ValidationPeptide field the chains start from.
START_POSITIONS = {"built": "start", "md": "md_frames"}
QUALITY_COLUMNS = ("valid", "bonds_ok", "l_chirality_ok", "left_molecule", "jsd_rama", "sample_error")


@dataclass(frozen=True)
class ValidationPeptide:
    """What scoring one validation peptide's samples needs, all on heavy atoms.

    Attributes
    ----------
    sequence: one-letter sequence.
    features: graph features of the heavy atoms.
    start: (n_heavy, 3) nm, the minimized built structure.
    md_frames: (n_frames, n_heavy, 3) nm, the MD frames (chains start on them with ``start="md"``).
    topology: heavy-atom topology (for dihedrals of the jumps).
    bond_length_nm: (n_bonds,) mean MD length of each of ``features.bonds``.
    reference_angles: (n_frames, n_residues, 2) rad, (φ, ψ) of the MD frames.
    """

    sequence: str
    features: TopologyFeatures
    start: torch.Tensor
    md_frames: torch.Tensor
    topology: mdtraj.Topology
    bond_length_nm: np.ndarray
    reference_angles: np.ndarray


def load_validation_peptide(md_dir: Path | str) -> ValidationPeptide:
    """Read ``md_dir``/{system.pdb, traj.xtc, topology.pdb} (the outputs of ``jamun simulate``)."""
    md_dir = Path(md_dir)
    missing = [name for name in ("system.pdb", "traj.xtc", "topology.pdb") if not (md_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"validation peptide folder {md_dir} lacks {missing} (run `jamun simulate` first)")
    system = mdtraj.load(str(md_dir / "system.pdb"))
    features = topology_features(system.topology)
    heavy = features.heavy_atom_indices
    reference = mdtraj.load(str(md_dir / "traj.xtc"), top=str(md_dir / "topology.pdb"), atom_indices=heavy)
    if reference.n_atoms != len(heavy):
        raise ValueError(f"{md_dir / 'traj.xtc'} does not match the heavy atoms of {md_dir / 'system.pdb'}")
    topology = reference.topology
    return ValidationPeptide(
        sequence=features.sequence,
        features=features,
        start=torch.from_numpy(system.xyz[0, heavy]),
        md_frames=torch.from_numpy(reference.xyz),
        topology=topology,
        bond_length_nm=bond_lengths(reference.xyz, features.bonds).mean(axis=0),
        reference_angles=backbone_dihedrals(reference).angles,
    )


def score_jumps(peptide: ValidationPeptide, jumps: np.ndarray, chains: int, *, bond_tolerance_nm: float,
                bins: int) -> dict[str, float]:
    """The :data:`QUALITY_COLUMNS` of step-major jumps (n_frames, n_heavy, 3) nm of one peptide."""
    traj = mdtraj.Trajectory(jumps, peptide.topology)
    bonds_ok = bond_length_ok(traj, peptide.features.bonds, peptide.bond_length_nm, bond_tolerance_nm)
    chiral_ok = l_chirality_ok(traj)
    lengths = bond_lengths(jumps, peptide.features.bonds)
    angles = backbone_dihedrals(traj).angles
    jsd = float(np.mean([
        jsd_angles(angles[:, r], peptide.reference_angles[:, r], bins) for r in range(angles.shape[1])
    ]))
    valid = float((bonds_ok & chiral_ok).mean())
    return {
        "valid": valid, "bonds_ok": float(bonds_ok.mean()), "l_chirality_ok": float(chiral_ok.mean()),
        "left_molecule": float(chains_left_molecule(lengths, peptide.bond_length_nm, chains).mean()),
        "jsd_rama": jsd, "sample_error": (1.0 - valid) + jsd,
    }  # fmt: skip


@torch.no_grad()
def sample_quality(
    denoiser: torch.nn.Module,
    peptides: Sequence[ValidationPeptide],
    sample_cfg: Mapping,
    *,
    bond_tolerance_nm: float,
    bins: int,
    start: str = "built",
) -> dict[str, dict[str, float]]:
    """Walk ``sample_cfg`` chains of every peptide in one batch and score their jumps.

    ``sample_cfg`` is a partial ``sample:`` section (missing keys take the schema's defaults);
    ``bond_tolerance_nm``, ``bins`` and ``start`` are ``train.sample_check``'s
    ``bond_tolerance_nm``, ``bins_rama`` and ``start`` ("built" or "md", see the module docstring).

    Returns ``{sequence: {column: value}}`` plus ``"mean"``, the unweighted mean over peptides.
    A walk that becomes non-finite scores as entirely invalid (valid 0, every chain left the
    molecule, JSD ln 2) instead of stopping training: a bad model is a result, not a crash.
    """
    settings = SampleSettings.from_config(dict(sample_cfg))
    if start not in START_POSITIONS:
        raise ValueError(f"sample check start must be one of {list(START_POSITIONS)}, got {start!r}")
    starts = [getattr(p, START_POSITIONS[start]) for p in peptides]
    was_training = denoiser.training
    denoiser.eval()
    saved: list[list[np.ndarray]] = [[] for _ in peptides]
    try:
        for _, jumps in walk_jump_peptides(denoiser, [(p.features, x0) for p, x0 in zip(peptides, starts)], settings,
                                           sequences=[p.sequence for p in peptides]):
            for store, xyz in zip(saved, jumps):
                store.append(xyz.float().cpu().numpy())
        finite = True
    except FloatingPointError:
        finite = False
    finally:
        denoiser.train(was_training)
    failed = {"valid": 0.0, "bonds_ok": 0.0, "l_chirality_ok": 0.0, "left_molecule": 1.0,
              "jsd_rama": float(np.log(2)), "sample_error": 1.0 + float(np.log(2))}  # fmt: skip
    scores = {
        p.sequence: score_jumps(p, np.concatenate(store), settings.chains, bond_tolerance_nm=bond_tolerance_nm,
                                bins=bins) if finite else dict(failed)
        for p, store in zip(peptides, saved)
    }  # fmt: skip
    scores["mean"] = {column: float(np.mean([s[column] for s in scores.values()])) for column in QUALITY_COLUMNS}
    return scores
