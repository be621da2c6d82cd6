"""Curl of a model's score in one residue's (φ, ψ) plane: ∮ s · dy around small torsion loops.

What: from MD frames plus σ-Gaussian noise (y0 = x + σ η, seeded), the structure is walked around
the square (0,0)->(d,0)->(d,d)->(0,d)->(0,0) of (Δφ, Δψ) in degrees, turning φ and ψ of one residue
rigidly (:mod:`jamun.analysis.score_curl`), and the model's score s(y) = (xhat(y) - y)/σ² is
integrated along it (trapezoid rule, all heavy atoms, float64; dimensionless). Each row gives the
integral, two scales to compare it with (Σ |s| |dy|, which counts the score's components across the
path too, and the mean |∫ s · dy| over the loop's four sides: the learned log-density differences
between its corners, of which the integral is the part no density explains), and, as a control, the same integral
for the exact gradient field -(y - x)/σ² (the score of an isotropic Gaussian around the clean
frame), which must be ~0. Per loop size: the mean |integral|, and the ratio of the means between
the sizes, (d1/d2)² (4 for 10 vs 5 degrees) for a genuine curl.

Why: Langevin dynamics on a score field that is not a gradient has a stationary density other
than the learned one; this says whether, and how much, the model's score has curl where the
walk goes. A model with ``output: energy`` is a gradient by construction and should give ~0.

How (from the repository root):

    .venv/bin/python benchmarks/score_curl.py --model pretrained --md results/md/GN \
        --residue 1 --frames 6 --loops 10 5 --points 20
    .venv/bin/python benchmarks/score_curl.py --model pretrained --pdb /tmp/GN/system.pdb  # built by
        # `jamun build GN -o /tmp/GN`: its one frame, with --frames independent noise draws

``--residue`` is mdtraj's residue index (caps count: 1 is the first amino acid).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mdtraj
import numpy as np
import torch

import jamun.model
from jamun.analysis.score_curl import (
    dihedral,
    loop_integral_from_scores,
    loop_magnitude,
    torsion_loop,
    torsion_rotor,
)
from jamun.data.graph import TopologyFeatures, batch_graphs, topology_features


def load_frames(
    md: Path, pdb: Path | None, frames: int
) -> tuple[TopologyFeatures, mdtraj.Topology, np.ndarray, np.ndarray, str]:
    """Heavy-atom features, heavy-atom topology, (frames, n, 3) float64 nm clean positions, their
    frame indices and a label; from ``pdb`` when given, else from the MD folder ``md``
    (heavy atoms as :func:`jamun.training.sample_quality.load_validation_peptide` reads them)."""
    if pdb is not None:
        trajectory = mdtraj.load(str(pdb))
        features = topology_features(trajectory.topology)
        trajectory = trajectory.atom_slice(features.heavy_atom_indices)
        source = str(pdb)
    else:
        missing = [name for name in ("system.pdb", "traj.xtc", "topology.pdb") if not (md / name).is_file()]
        if missing:
            raise SystemExit(f"{md} lacks {missing}: run `jamun simulate` first, or pass --pdb (e.g. from "
                             f"`jamun build GN -o /tmp/GN`)")
        features = topology_features(mdtraj.load(str(md / "system.pdb")).topology)
        trajectory = mdtraj.load(str(md / "traj.xtc"), top=str(md / "topology.pdb"),
                                 atom_indices=features.heavy_atom_indices)
        if trajectory.n_atoms != features.num_atoms:
            raise SystemExit(f"{md / 'traj.xtc'} does not match the heavy atoms of {md / 'system.pdb'}")
        source = str(md)
    # evenly spaced frames; a single-frame source gives the same frame `frames` times (new noise each)
    index = np.linspace(0, trajectory.n_frames - 1, frames).round().astype(int)
    return features, trajectory.topology, trajectory.xyz[index].astype(np.float64), index, source


def model_scores(denoiser: torch.nn.Module, features: TopologyFeatures, points: np.ndarray, chunk: int) -> np.ndarray:
    """(m, n, 3) float64 scores of the model at ``points`` (m, n, 3), ``chunk`` structures a batch."""
    out = []
    for start in range(0, len(points), chunk):
        block = torch.from_numpy(points[start:start + chunk]).float()
        graph = batch_graphs([features] * len(block))
        out.append(denoiser.score(block.reshape(-1, 3), graph).double().reshape(block.shape).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pretrained", help="checkpoint path or a shipped model's name")
    parser.add_argument("--md", type=Path, default=Path("results/md/GN"), help="folder of `jamun simulate`")
    parser.add_argument("--pdb", type=Path, help="take the frame(s) from this PDB instead of --md")
    parser.add_argument("--residue", type=int, default=1, help="mdtraj residue index (1 = first amino acid)")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--loops", type=float, nargs="+", default=[10.0, 5.0], help="loop sizes, degrees")
    parser.add_argument("--points", type=int, default=20, help="segments per side of the loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=80, help="structures per model batch")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    checkpoint = jamun.model.resolve_model(args.model)
    denoiser = jamun.model.load(checkpoint)
    sigma = float(denoiser.sigma)
    features, topology, clean, index, source = load_frames(args.md, args.pdb, args.frames)
    phi = torsion_rotor(topology, args.residue, "phi", features.bonds)
    psi = torsion_rotor(topology, args.residue, "psi", features.bonds)
    generator = torch.Generator().manual_seed(args.seed)
    starts = clean + sigma * torch.randn(clean.shape, generator=generator, dtype=torch.float64).numpy()
    print(f"model {checkpoint} (sigma {sigma} nm, output {denoiser.config.get('output', 'vector')}); "
          f"{source}, {features.sequence}, residue {args.residue} ({topology.residue(args.residue)}), "
          f"{features.num_atoms} heavy atoms; {len(starts)} frames + noise (seed {args.seed}); "
          f"{args.points} segments a side; {args.threads} thread(s)")
    print(f"{'frame':>5} {'md':>6} {'phi0':>7} {'psi0':>7} {'loop':>5} {'integral':>10} {'sum|s||dy|':>10} "
          f"{'ratio':>9} {'|side|':>8} {'gauss':>10}")
    rows: dict[float, list[tuple[float, float, float]]] = {size: [] for size in args.loops}
    began = time.perf_counter()
    for f, (x, y0) in enumerate(zip(clean, starts)):
        angles = np.rad2deg([dihedral(y0, phi.atoms), dihedral(y0, psi.atoms)])
        for size in args.loops:
            loop = torsion_loop(y0, phi, psi, size, args.points)
            scores = model_scores(denoiser, features, loop[:-1], args.chunk)
            scores = np.concatenate([scores, scores[:1]])  # the loop's last point is its first
            integral, magnitude = loop_integral_from_scores(scores, loop), loop_magnitude(scores, loop)
            gauss = loop_integral_from_scores(-(loop - x) / sigma**2, loop)
            k = args.points
            side = np.mean([abs(loop_integral_from_scores(scores[i:i + k + 1], loop[i:i + k + 1]))
                            for i in range(0, 4 * k, k)])
            rows[size].append((integral, magnitude, gauss, side))
            print(f"{f:>5} {index[f]:>6} {angles[0]:>7.1f} {angles[1]:>7.1f} {size:>5g} {integral:>10.4f} "
                  f"{magnitude:>10.2f} {integral / magnitude:>9.2e} {side:>8.3f} {gauss:>10.2e}")
    elapsed = time.perf_counter() - began
    print("\nper loop size: mean |integral| (model), mean sum|s||dy|, mean |side|, "
          "mean |integral| (Gaussian control)")
    means = {}
    for size, values in rows.items():
        values = np.array(values)
        means[size] = np.abs(values[:, 0]).mean()
        print(f"  {size:>5g} deg: {means[size]:.4f}  {values[:, 1].mean():.2f}  {values[:, 3].mean():.3f}  "
              f"{np.abs(values[:, 2]).mean():.2e}")
    sizes = list(args.loops)
    for a, b in zip(sizes, sizes[1:]):
        print(f"  ratio {a:g}/{b:g} deg: {means[a] / means[b]:.2f} (area ratio {(a / b) ** 2:.2f} for a genuine curl)")
    evaluations = len(starts) * len(sizes) * 4 * args.points
    print(f"{evaluations} score evaluations in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
