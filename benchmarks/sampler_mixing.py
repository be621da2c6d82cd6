"""Mixing of walk-jump sampling against the damping γ·dt and the step size: Rama JSD vs steps.

For a trained model and a peptide with reference MD, samples the peptide once per
(``friction_per_step``, dt) pair and prints the mean 2D Ramachandran JSD (nats) of growing step
prefixes against the reference. The sampler defaults change only with such a table.
``--init-from-md`` starts the chains from frames of the reference MD instead of the minimized
structure: if the JSD then stays low, the learned density is right and the chains mix too slowly;
if it rises, the model is biased.

    python benchmarks/sampler_mixing.py GN --model results/train/model.ckpt \
        --reference results/md/GN --chains 16 --steps 1000 --dt-sigmas 1.0 1.5
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import mdtraj
import numpy as np

import jamun.model
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
    parser.add_argument("--dt-sigmas", type=float, nargs="+", default=[1.0], help="step sizes in units of sigma")
    parser.add_argument("--init-from-md", action="store_true", help="start the chains from reference MD frames")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--bins", type=int, default=50)
    args = parser.parse_args()

    reference = backbone_dihedrals(
        mdtraj.load(args.reference / "traj.xtc", top=args.reference / "topology.pdb")
    ).angles
    prefixes = np.linspace(args.steps / args.points, args.steps, args.points).astype(int)
    sigma = float(jamun.model.load(args.model).sigma)
    init = args.reference / "traj.xtc" if args.init_from_md else None
    print(f"{'gamma*dt':>9} {'dt/sigma':>8} " + " ".join(f"{s:>8d}" for s in prefixes) + "   (steps; mean Rama JSD, nats)")
    for friction, dt_sigmas in itertools.product(args.frictions, args.dt_sigmas):
        with tempfile.TemporaryDirectory() as out:
            info = sample_peptide(
                args.peptide, args.reference / "system.pdb", args.model, Path(out), init_trajectory=init,
                chains=args.chains, steps=args.steps, friction_per_step=friction, dt=dt_sigmas * sigma,
                progress=False,
            )
            angles = backbone_dihedrals(mdtraj.load(Path(out) / "samples.xtc", top=Path(out) / "topology.pdb")).angles
        row = [rama_jsd(angles[: s * args.chains], reference, args.bins) for s in prefixes]
        print(f"{friction:>9.3f} {dt_sigmas:>8.2f} " + " ".join(f"{j:8.3f}" for j in row)
              + f"   ({info['samples_per_second']:.0f} samples/s)")


if __name__ == "__main__":
    main()
