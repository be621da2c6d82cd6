"""Where invalid jumps come from: the denoiser on MD-like noisy inputs, or the walk's drift.

For each peptide folder (``jamun simulate`` outputs), denoises ``--frames`` MD frames x + sigma eta
once (the "oracle" jump: y exactly as in training) and reports jump validity (bonds within the
tolerance of their MD mean, L at every CA), the RMS bond-length error and the worst bond's RMS
error; then walks ``--chains`` x ``--steps`` from the built structure and scores those jumps the
same way (jamun.training.sample_quality). A model whose oracle jumps are valid but whose walk
jumps are not has a score that drifts off the noisy data manifold.

    python benchmarks/denoise_validity.py results/train/model.ckpt results/md/GN results/md/AA
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mdtraj
import numpy as np
import torch

import jamun.model
from jamun.analysis.validity import bond_length_ok, l_chirality_ok
from jamun.geometry import bond_lengths
from jamun.data.graph import batch_graphs
from jamun.training.sample_quality import load_validation_peptide, sample_quality
from jamun.training.settings import train_settings


@torch.no_grad()
def oracle_jumps(model: jamun.model.Denoiser, md_dir: Path, frames: int, seed: int, tolerance_nm: float
                 ) -> dict[str, float]:
    """Validity of xhat(x + sigma eta) over ``frames`` evenly spaced MD frames of ``md_dir``."""
    peptide = load_validation_peptide(md_dir)
    heavy = peptide.features.heavy_atom_indices
    reference = mdtraj.load(str(md_dir / "traj.xtc"), top=str(md_dir / "topology.pdb"), atom_indices=heavy)
    x = torch.from_numpy(reference.xyz[np.linspace(0, reference.n_frames - 1, frames).astype(int)])  # [F, n, 3]
    generator = torch.Generator().manual_seed(seed)
    y = x + model.sigma * torch.randn(x.shape, generator=generator)
    graph = batch_graphs([peptide.features] * frames)
    jumps = model.xhat(y.reshape(-1, 3), graph).reshape(x.shape).numpy()
    traj = mdtraj.Trajectory(jumps, peptide.topology)
    bonds = peptide.features.bonds
    ok = bond_length_ok(traj, bonds, peptide.bond_length_nm, tolerance_nm) & l_chirality_ok(traj)
    error = bond_lengths(jumps, bonds) - bond_lengths(x.numpy(), bonds)  # [F, n_bonds]
    rms = np.sqrt((error**2).mean(axis=0))
    return {"oracle_valid": float(ok.mean()), "oracle_bond_rms_nm": float(np.sqrt((error**2).mean())),
            "oracle_worst_bond_rms_nm": float(rms.max())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("md_dirs", type=Path, nargs="+")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = jamun.model.load(args.checkpoint)
    check = train_settings({})["sample_check"]  # scored as training's sample checks are, by default
    walk = {"chains": args.chains, "steps": args.steps, "burn_in": check["burn_in"], "seed": args.seed}
    for md_dir in args.md_dirs:
        row = oracle_jumps(model, md_dir, args.frames, args.seed, check["bond_tolerance_nm"])
        walked = sample_quality(model, [load_validation_peptide(md_dir)], walk,
                                bond_tolerance_nm=check["bond_tolerance_nm"], bins=check["bins_rama"])["mean"]
        row.update(walk_valid=walked["valid"], walk_left_molecule=walked["left_molecule"],
                   walk_jsd_rama=walked["jsd_rama"])  # fmt: skip
        print(md_dir.name, "\t".join(f"{k}={v:.4g}" for k, v in row.items()), sep="\t", flush=True)


if __name__ == "__main__":
    main()
