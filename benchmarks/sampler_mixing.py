"""Mixing of walk-jump sampling against the damping γ·dt: Ramachandran JSD vs steps.

For a trained model and a peptide with reference MD, samples the peptide once per
``friction_per_step`` value and prints the mean 2D Ramachandran JSD (nats) of growing step
prefixes against the reference. The sampler default (γ·dt = 1.0) changes only with such a table.

    python benchmarks/sampler_mixing.py GN --model results/train/model.ckpt \
        --reference results/md/GN --chains 16 --steps 1000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mdtraj
import numpy as np

from jamun.analysis.dihedrals import backbone_dihedrals
from jamun.analysis.jsd import jsd_angles
from jamun.sampling import sample_peptide


def rama_jsd(angles: np.ndarray, reference: np.ndarray, bins: int) -> float:
    """Mean over residues of the 2D (φ_i, ψ_i) JSD; angles: (n_frames, n_residues, 2) rad."""
    return float(np.mean([jsd_angles(angles[:, i], reference[:, i], bins) for i in range(angles.shape[1])]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peptide")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="MD folder with traj.xtc, topology.pdb, system.pdb")
    parser.add_argument("--frictions", type=float, nargs="+", default=[0.004, 0.1, 1.0])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--bins", type=int, default=50)
    args = parser.parse_args()

    reference = backbone_dihedrals(
        mdtraj.load(args.reference / "traj.xtc", top=args.reference / "topology.pdb")
    ).angles
    prefixes = np.linspace(args.steps / args.points, args.steps, args.points).astype(int)
    print(f"{'gamma*dt':>9} " + " ".join(f"{s:>8d}" for s in prefixes) + "   (steps; mean Rama JSD, nats)")
    for friction in args.frictions:
        with tempfile.TemporaryDirectory() as out:
            info = sample_peptide(
                args.peptide, args.reference / "system.pdb", args.model, Path(out),
                chains=args.chains, steps=args.steps, friction_per_step=friction, progress=False,
            )
            angles = backbone_dihedrals(mdtraj.load(Path(out) / "samples.xtc", top=Path(out) / "topology.pdb")).angles
        row = [rama_jsd(angles[: s * args.chains], reference, args.bins) for s in prefixes]
        print(f"{friction:>9.3f} " + " ".join(f"{j:8.3f}" for j in row) + f"   ({info['samples_per_second']:.0f} samples/s)")


if __name__ == "__main__":
    main()
