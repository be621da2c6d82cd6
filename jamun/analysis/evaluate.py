"""Evaluate one peptide: JAMUN samples and MD of equal wall time against the reference MD.

Inputs (docs/design.md §2): reference MD `traj.xtc`, `topology.pdb` (all atoms), `md.json`; an
independent replicate MD `traj.xtc`, `md.json` on the same topology; JAMUN `samples.xtc`,
`topology.pdb` (heavy atoms), `sample.json`. Everything is compared on heavy atoms.

Comparisons, each a dict of JSDs (nats) and JS distances (√nats) against the reference:
- "jamun": all samples; bootstrap 95% CIs over chains in "jamun_ci_low" / "jamun_ci_high";
- "md_equal_time": the replicate prefix that cost as much wall time as the sampler;
- "replicate_floor": the replicate prefix with as many frames as JAMUN has samples (finite-sample
  floor: what an independent MD run of that size scores).
"validity" holds bond-length and L-chirality fractions of JAMUN and the replicate MD, and the
chains that left the molecule (a bond > 2x its MD mean length): counted, never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np

from jamun.analysis import plots
from jamun.analysis.dihedrals import (BackboneDihedrals, backbone_dihedrals, check_same_residues,
                                      dihedral_features)
from jamun.analysis.inputs import EnsembleFiles, load_trajectory, read_record
from jamun.analysis.jsd import bin_index, js_distance, jsd_from_counts, sparse_counts
from jamun.analysis.msm import UNASSIGNED, MSMFit, fit_msm, macrostate_fractions
from jamun.analysis.timing import (equal_time_prefix, prefix_lengths, sampler_seconds,
                                   seconds_per_frame)
from jamun.analysis.validity import (LEFT_MOLECULE_FACTOR, bond_length_ok, chains_left_molecule, chirality_atoms,
                                     heavy_atom_bonds, l_chirality_ok, map_atoms)
from jamun.atomic import write_json_atomic
from jamun.geometry import bond_lengths, signed_volumes
from jamun.schema import section_settings
from jamun.sequence import residue_label, validate_sequence

logger = logging.getLogger(__name__)

ROLES = ("train", "test")
COMPARISONS = ("jamun", "md_equal_time", "replicate_floor")
CURVE_METRICS = ("jsd_rama_mean", "jsd_1d_mean", "jsd_macrostates")
SEED = 0
CI_PERCENTILES = (2.5, 97.5)


@dataclass(frozen=True)
class EvaluateSettings:
    """The `evaluate:` config section (the `msm:` sub-keys flattened in). Units: ps, nm.

    Keys and defaults in workflow/schemas/config.schema.yaml, described in config/README.md.
    """

    bins_1d: int
    bins_rama: int
    bins_4d: int
    bootstrap: int
    time_points: int
    tica_lag_ps: float
    tica_dim: int
    clusters: int
    macrostates: int
    bond_tolerance_nm: float

    @classmethod
    def from_config(cls, cfg: Mapping | None, source: str = "config") -> EvaluateSettings:
        """Settings from the `evaluate:` section; missing keys take the schema's defaults, an
        unknown key or a bad value is a one-line ValueError naming ``source`` and the key."""
        s = section_settings("evaluate", cfg, source)
        return cls(**{key: value for key, value in s.items() if key != "msm"}, **s["msm"])


def metric_labels(dihedrals: BackboneDihedrals, fit: MSMFit,
                  settings: EvaluateSettings) -> dict[str, np.ndarray]:
    """Per-frame labels (n_frames,) int64 of every histogram the JSDs compare.

    "rama_<i>": (φ_i, ψ_i) bin; "1d_<phi|psi>_<i>": one torsion's bin; "4d": joint bin of
    (φ1, ψ1, φ2, ψ2) (dipeptides only); "macrostates": reference-MSM macrostate or UNASSIGNED.
    """
    torsions = dihedrals.torsions
    labels = {f"rama_{i + 1}": bin_index(dihedrals.angles[:, i], settings.bins_rama)
              for i in range(len(dihedrals.residues))}
    labels |= {f"1d_{name}": bin_index(torsions[:, j], settings.bins_1d)
               for j, name in enumerate(dihedrals.labels)}
    if len(dihedrals.residues) == 2:
        labels["4d"] = bin_index(torsions, settings.bins_4d)
    labels["macrostates"] = fit.assign(dihedral_features(torsions))
    return labels


def reference_histograms(labels: Mapping[str, np.ndarray],
                         fit: MSMFit) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Sparse reference histograms; macrostates use the MSM's stationary populations."""
    histograms = {name: sparse_counts(values) for name, values in labels.items()
                  if name != "macrostates"}
    histograms["macrostates"] = (np.arange(fit.n_macrostates), fit.stationary)
    return histograms


def jsd_metrics(reference: Mapping[str, tuple[np.ndarray, np.ndarray]],
                labels: Mapping[str, np.ndarray], rows: slice | np.ndarray) -> dict[str, float]:
    """JSDs (nats) of the frames `rows` of an ensemble against the reference, plus means and
    JS distances: keys "jsd_<name>", "jsd_rama_mean", "jsd_1d_mean", "js_distance_<...>".

    jsd_macrostates uses assigned frames only (NaN when none is).
    """
    out = {}
    for name, values in labels.items():
        sample = values[rows]
        if name == "macrostates":
            sample = sample[sample != UNASSIGNED]
        out[f"jsd_{name}"] = (jsd_from_counts(*reference[name], *sparse_counts(sample))
                              if sample.size else float("nan"))
    for group in ("rama", "1d"):
        out[f"jsd_{group}_mean"] = float(np.mean([v for k, v in out.items()
                                                  if k.startswith(f"jsd_{group}_")]))
    out |= {f"js_distance_{key[4:]}": js_distance(value) for key, value in list(out.items())}
    return out


def step_major_rows(steps: int, chains: np.ndarray, n_chains: int) -> np.ndarray:
    """Frame indices of `chains` (k,) over the first `steps` steps of a step-major sample file
    (frame = step · n_chains + chain)."""
    return (np.arange(steps)[:, None] * n_chains + np.asarray(chains)[None, :]).ravel()


def bootstrap_ci(reference: Mapping, labels: Mapping[str, np.ndarray], steps: int, n_chains: int,
                 n_boot: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """Percentile 95% intervals of every JAMUN metric, resampling whole chains with replacement.

    Chains are independent, frames within a chain are not, so chains are the resampling unit.
    A resample repeats chains, i.e. holds fewer distinct samples, and finite-sample JSDs are
    biased upwards, so the interval tends to sit at or above the full-sample estimate.
    """
    draws = [jsd_metrics(reference, labels,
                         step_major_rows(steps, rng.integers(0, n_chains, n_chains), n_chains))
             for _ in range(n_boot)]
    keys = list(draws[0])
    low, high = np.nanpercentile([[d[k] for k in keys] for d in draws], CI_PERCENTILES, axis=0)
    return dict(zip(keys, low.tolist())), dict(zip(keys, high.tolist()))


def _curve(reference: Mapping, labels: Mapping[str, np.ndarray], frames: np.ndarray,
           seconds: np.ndarray) -> dict[str, list]:
    """JSD-vs-time curve: prefixes of `frames` rows costing `seconds` (s) each."""
    points = [jsd_metrics(reference, labels, slice(0, int(n))) for n in frames]
    metrics = [m for m in CURVE_METRICS + ("jsd_4d",) if m in points[0]]
    return {"seconds": seconds.tolist(), "frames": frames.tolist(),
            **{m: [p[m] for p in points] for m in metrics}}


def first_break_steps(lengths: np.ndarray, reference_nm: np.ndarray, n_chains: int) -> np.ndarray:
    """(n_chains,) int64: the first step at which each chain had a bond longer than
    LEFT_MOLECULE_FACTOR x its reference length, -1 for a chain that never left the molecule.

    lengths: (n_frames, n_bonds) nm, step-major (frame = step · n_chains + chain);
    reference_nm: (n_bonds,) nm.
    """
    # One frame per "chain" makes chains_left_molecule flag single frames: one definition of a
    # break for the count and for the step.
    broken = chains_left_molecule(lengths, reference_nm, len(lengths), LEFT_MOLECULE_FACTOR)
    broken = broken.reshape(-1, n_chains)  # [n_steps, n_chains]
    return np.where(broken.any(axis=0), broken.argmax(axis=0), -1)


def l_chirality_per_ca(traj: mdtraj.Trajectory) -> dict[str, float]:
    """Fraction of frames in which each CA with a CB is L, keyed by residue name and mdtraj index
    ("ASN2"; in a capped peptide the same i as jsd_rama_<i>)."""
    quads = chirality_atoms(traj.topology)
    is_l = signed_volumes(traj.xyz, quads) > 0  # [n_frames, n_chiral]
    residues = [traj.topology.atom(int(ca)).residue for ca in quads[:, 1]]
    return {f"{r.name}{r.index}": float(f) for r, f in zip(residues, is_l.mean(axis=0))}


def _validity(traj: mdtraj.Trajectory, bonds: np.ndarray, reference_nm: np.ndarray,
              tolerance_nm: float, n_chains: int) -> dict:
    """Validity record of step-major `traj` with `n_chains` chains (an MD run is one chain)."""
    bonds_ok = bond_length_ok(traj, bonds, reference_nm, tolerance_nm)
    chiral_ok = l_chirality_ok(traj)
    valid = (bonds_ok & chiral_ok).reshape(-1, n_chains)  # [n_steps, n_chains]
    lengths = bond_lengths(traj.xyz, bonds)  # [n_frames, n_bonds]
    first_break = first_break_steps(lengths, reference_nm, n_chains)
    left = first_break >= 0
    broken_steps = first_break[left]
    return {"bonds_ok": float(bonds_ok.mean()), "l_chirality_ok": float(chiral_ok.mean()),
            "valid": float(valid.mean()),
            "valid_intact_chains": float(valid[:, ~left].mean()) if not left.all() else None,
            "l_chirality_per_ca": l_chirality_per_ca(traj),
            "bond_length_mean_nm": float(lengths.mean()),
            "chains": n_chains, "chains_left_molecule": int(left.sum()),
            "left_molecule_fraction": float(left.mean()),
            "first_break_step": [int(s) if s >= 0 else None for s in first_break],
            "first_break_step_earliest": int(broken_steps.min()) if left.any() else None,
            "first_break_step_median": float(np.median(broken_steps)) if left.any() else None}


def _msm_record(fit: MSMFit, frame_ps: float, populations: Mapping[str, np.ndarray],
                unassigned: Mapping[str, float]) -> dict:
    """The metrics.json "msm" section; times converted from frames to ps (`frame_ps` each)."""
    its_lags, its_timescales = fit.its_table()
    return {
        "lag_frames": fit.lag_frames, "lag_ps": fit.lag_frames * frame_ps,
        "tica_dim": int(fit.tica.output_dimension), "clusters": int(fit.kmeans.n_clusters),
        "connected_clusters": int(fit.msm.n_states),
        "macrostates_requested": fit.macrostates_requested, "macrostates": fit.n_macrostates,
        "notes": fit.notes,
        "timescales_ps": fit.timescales_frames * frame_ps,
        "its_lags_ps": its_lags * frame_ps, "its_timescales_ps": its_timescales * frame_ps,
        **{f"populations_{name}": value for name, value in populations.items()},
        **{f"unassigned_fraction_{name}": value for name, value in unassigned.items()},
    }


def _jsonable(value):
    """Plain JSON types; NaN becomes null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return value


@dataclass(frozen=True)
class Ensembles:
    """The three ensembles of one peptide, heavy atoms only, with their run records.

    reference, replicate: MD trajectories (reference topology); samples: JAMUN, step-major.
    dihedrals: {"reference", "replicate", "samples": BackboneDihedrals}, same residues in each.
    records: {"reference": md.json, "replicate": md.json, "samples": sample.json} contents.
    """

    reference: mdtraj.Trajectory
    replicate: mdtraj.Trajectory
    samples: mdtraj.Trajectory
    dihedrals: dict[str, BackboneDihedrals]
    records: dict[str, dict]

    @property
    def chains(self) -> int:
        return int(self.records["samples"]["chains"])

    @property
    def steps(self) -> int:
        return self.samples.n_frames // self.chains


def load_ensembles(sequence: str, files: EnsembleFiles) -> Ensembles:
    """Read and cross-check the reference MD, its replicate and the JAMUN samples of `sequence`.

    Raises FileNotFoundError for a missing input, ValueError when the files do not belong
    together (other peptide, other residues, frame count not a multiple of the chains).
    """
    md_keys, sample_keys = ("n_frames", "save_every_ps"), ("chains", "n_samples")
    records = {"reference": read_record(files.reference_record, "jamun simulate", md_keys),
               "replicate": read_record(files.replicate_record, "jamun simulate --role replicate", md_keys),
               "samples": read_record(files.samples_record, "jamun sample", sample_keys)}
    topology_pdb = files.topology
    reference, replicate = (
        load_trajectory(xtc, topology_pdb, writer, frames=records[name]["n_frames"],
                        frame_interval=records[name]["save_every_ps"])
        for name, xtc, writer in (("reference", files.reference, "jamun simulate"),
                                  ("replicate", files.replicate, "jamun simulate --role replicate")))
    samples = load_trajectory(files.samples, files.samples_topology, "jamun sample",
                              frames=records["samples"]["n_samples"], frame_interval=None)

    dihedrals = {"reference": backbone_dihedrals(reference),
                 "replicate": backbone_dihedrals(replicate),
                 "samples": backbone_dihedrals(samples)}
    held = "-".join(dihedrals["reference"].residues)
    if held != residue_label(sequence):
        raise ValueError(f"{topology_pdb} holds {held}, not peptide {sequence} "
                         f"({residue_label(sequence)})")
    check_same_residues(dihedrals["reference"], dihedrals["replicate"], f"replicate {files.replicate}")
    check_same_residues(dihedrals["reference"], dihedrals["samples"], f"samples {files.samples}")
    chains = records["samples"].get("chains")
    if not isinstance(chains, int) or chains < 1 or samples.n_frames % chains:
        raise ValueError(f"{files.samples} has {samples.n_frames} frames, not a "
                         f"multiple of chains={chains!r} from {files.samples_record}")
    return Ensembles(reference, replicate, samples, dihedrals, records)


def validity_section(ensembles: Ensembles, tolerance_nm: float) -> dict:
    """The metrics.json "validity" section: JAMUN samples and (as a baseline) the replicate MD,
    bond lengths against the reference MD's mean length of each heavy-atom bond.

    Per ensemble: fractions of frames with every bond within `tolerance_nm` ("bonds_ok"), L at
    every CA ("l_chirality_ok"), both ("valid"); "valid" over the chains that never left the
    molecule ("valid_intact_chains", null if every chain left); the L fraction of each CA
    ("l_chirality_per_ca"); the mean bond length (nm, over bonds and frames); chains that ever had
    a bond longer than LEFT_MOLECULE_FACTOR x its MD mean ("chains_left_molecule" of "chains", the
    fraction, and per chain the first such step, null if never, with the earliest and the median
    over broken chains). The replicate MD is one chain whose steps are its frames.
    """
    reference = ensembles.reference
    bonds = heavy_atom_bonds(reference.topology)
    mean_nm = bond_lengths(reference.xyz, bonds).mean(axis=0)
    sample_bonds = map_atoms(reference.topology, ensembles.samples.topology, bonds)
    jamun = _validity(ensembles.samples, sample_bonds, mean_nm, tolerance_nm, ensembles.chains)
    if jamun["chains_left_molecule"]:
        logger.warning("%d of %d JAMUN chains left the molecule (a bond > %g x its MD mean "
                       "length), the first at step %d; mean bond length %.3f nm vs MD %.3f nm",
                       jamun["chains_left_molecule"], jamun["chains"], LEFT_MOLECULE_FACTOR,
                       jamun["first_break_step_earliest"], jamun["bond_length_mean_nm"],
                       mean_nm.mean())
    return {"bond_tolerance_nm": tolerance_nm, "left_molecule_factor": LEFT_MOLECULE_FACTOR,
            "reference_bond_length_mean_nm": float(mean_nm.mean()),
            "jamun": jamun,
            "md_replicate": _validity(ensembles.replicate, bonds, mean_nm, tolerance_nm, 1)}


def write_figures(out_dir: Path, ensembles: Ensembles, fit: MSMFit, metrics: dict,
                  settings: EvaluateSettings) -> None:
    """ramachandran.png, jsd_vs_time.png, msm.png and its.png of one evaluated peptide."""
    dih = ensembles.dihedrals
    equal_frames = metrics["frames"]["md_equal_time"]
    msm = metrics["msm"]
    plots.ramachandran({"reference MD": dih["reference"].angles, "JAMUN": dih["samples"].angles,
                        "MD, equal wall time": dih["replicate"].angles[:equal_frames]},
                       dih["reference"].residues, out_dir / "ramachandran.png",
                       bins=settings.bins_rama)
    curves = metrics["curves"]
    plots.jsd_vs_time({"JAMUN": curves["jamun"], "replicate MD": curves["md_replicate"]},
                      CURVE_METRICS, out_dir / "jsd_vs_time.png",
                      marker_seconds=metrics["timing"]["sampler_wall_seconds"])
    plots.msm_overview({"reference MD (stationary)": fit.stationary,
                        "JAMUN": msm["populations_jamun"],
                        "MD, equal wall time": msm["populations_md_equal_time"]},
                       {"reference MD": fit.project(dihedral_features(dih["reference"].torsions)),
                        "JAMUN": fit.project(dihedral_features(dih["samples"].torsions))},
                       out_dir / "msm.png")
    plots.implied_timescales(np.asarray(msm["its_lags_ps"], dtype=float),
                             np.asarray(msm["its_timescales_ps"], dtype=float),
                             out_dir / "its.png", model_lag_ps=msm["lag_ps"])


def evaluate_peptide(sequence: str, files: EnsembleFiles, out_dir: Path | str, eval_cfg: Mapping, *,
                     role: str) -> dict:
    """Compare JAMUN samples and MD of equal wall time with the reference MD of one peptide.

    Writes `out_dir/{metrics.json, ramachandran.png, jsd_vs_time.png, msm.png, its.png}` and
    returns the metrics.json content. role: "train" or "test" (held out; recorded, not used).
    """
    sequence = validate_sequence(sequence)
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {list(ROLES)}")
    settings = EvaluateSettings.from_config(eval_cfg)
    ens = load_ensembles(sequence, files)
    chains, steps, n_samples = ens.chains, ens.steps, ens.samples.n_frames

    sampler_cost = sampler_seconds(ens.records["samples"], sequence, str(files.samples_record))
    md_cost = seconds_per_frame(ens.records["replicate"], str(files.replicate_record))
    equal_time = equal_time_prefix(sampler_cost, md_cost, ens.replicate.n_frames)
    floor_frames = min(n_samples, ens.replicate.n_frames)

    frame_ps = float(ens.records["reference"]["save_every_ps"])
    fit = fit_msm(dihedral_features(ens.dihedrals["reference"].torsions),
                  lag_frames=max(1, int(round(settings.tica_lag_ps / frame_ps))),
                  tica_dim=settings.tica_dim, clusters=settings.clusters,
                  macrostates=settings.macrostates, seed=SEED)
    labels = {name: metric_labels(dih, fit, settings) for name, dih in ens.dihedrals.items()}
    histograms = reference_histograms(labels["reference"], fit)
    jam, rep = labels["samples"], labels["replicate"]

    comparisons = {
        "jamun": jsd_metrics(histograms, jam, slice(None)),
        "md_equal_time": jsd_metrics(histograms, rep, slice(0, equal_time.frames)),
        "replicate_floor": jsd_metrics(histograms, rep, slice(0, floor_frames)),
    }
    if settings.bootstrap > 0:
        low, high = bootstrap_ci(histograms, jam, steps, chains, settings.bootstrap,
                                 np.random.default_rng(SEED))
        comparisons |= {"jamun_ci_low": low, "jamun_ci_high": high}
    if "jsd_4d" in comparisons["jamun"]:
        logger.info("%s: jsd_4d (%d^4 bins) JAMUN %.4f nats vs replicate floor %.4f nats at %d "
                    "frames", sequence, settings.bins_4d, comparisons["jamun"]["jsd_4d"],
                    comparisons["replicate_floor"]["jsd_4d"], floor_frames)

    sample_steps = prefix_lengths(steps, settings.time_points)
    replicate_frames = prefix_lengths(ens.replicate.n_frames, settings.time_points)
    curves = {"jamun": _curve(histograms, jam, sample_steps * chains,
                              sampler_cost * sample_steps / steps),
              "md_replicate": _curve(histograms, rep, replicate_frames, replicate_frames * md_cost)}

    populations, unassigned = {"reference": fit.stationary}, {}
    for name, values in (("jamun", jam["macrostates"]),
                         ("md_equal_time", rep["macrostates"][:equal_time.frames])):
        populations[name], unassigned[name] = macrostate_fractions(values, fit.n_macrostates)

    metrics = _jsonable({
        "peptide": sequence, "residues": residue_label(sequence), "role": role,
        "units": {"jsd": "nats", "js_distance": "sqrt(nats)", "seconds": "measured wall s"},
        "md_equal_time_capped": equal_time.capped,
        "frames": {"reference": ens.reference.n_frames, "replicate": ens.replicate.n_frames,
                   "jamun": n_samples, "chains": chains, "steps": steps,
                   "md_equal_time": equal_time.frames,
                   "md_equal_time_target": equal_time.target_frames,
                   "replicate_floor": floor_frames},
        "timing": {"sampler_wall_seconds": sampler_cost, "md_seconds_per_frame": md_cost,
                   "md_equal_time_seconds": equal_time.seconds,
                   "replicate_floor_capped": floor_frames < n_samples},
        "bins": {"rama": settings.bins_rama, "1d": settings.bins_1d, "4d": settings.bins_4d},
        **comparisons,
        "msm": _msm_record(fit, frame_ps, populations, unassigned),
        "validity": validity_section(ens, settings.bond_tolerance_nm),
        "curves": curves,
    })
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_figures(out_dir, ens, fit, metrics, settings)
    write_json_atomic(out_dir / "metrics.json", metrics, indent=1)
    return metrics
