"""evaluate_peptide end to end on small synthetic trajectories; summarize; equal-time prefixes."""

import json
import re
import shutil

import mdtraj
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from jamun.analysis import EnsembleFiles, evaluate_peptide, summarize
from jamun.analysis.dihedrals import backbone_dihedrals
from jamun.analysis.evaluate import Ensembles, validity_section
from jamun.analysis.summarize import HEADLINE, metrics_table
from jamun.analysis.validity import heavy_atom_bonds
from jamun.errors import InputError
from jamun.analysis.timing import (equal_time_prefix, prefix_lengths, sampler_seconds,
                                   seconds_per_frame)
from jamun.peptides import build_peptide

# Two basins per residue (deg): beta (-75, 140) and alpha-R (-70, -40).
BASINS = np.array([[-75.0, 140.0], [-70.0, -40.0]])
EVAL_CFG = {"bins_1d": 100, "bins_rama": 50, "bins_4d": 6, "bootstrap": 20, "time_points": 5,
            "msm": {"tica_lag_ps": 2.0, "tica_dim": 3, "clusters": 12, "macrostates": 4},
            "bond_tolerance_nm": 0.02}
FIGURES = ("ramachandran.png", "jsd_vs_time.png", "msm.png", "its.png")


def rotate(xyz, moving, origin, axis_end, angle):
    """Rotate atoms `moving` of every frame by `angle` (n_frames,) rad about origin→axis_end
    (right-handed, Rodrigues). xyz: (n_frames, n_atoms, 3), changed in place."""
    axis = xyz[:, axis_end] - xyz[:, origin]
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    v = xyz[:, moving] - xyz[:, origin][:, None]
    k = axis[:, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    rotated = v * cos + np.cross(k, v) * sin + k * np.sum(k * v, axis=-1, keepdims=True) * (1 - cos)
    xyz[:, moving] = rotated + xyz[:, origin][:, None]


def set_backbone(traj, targets_deg):
    """Copy of `traj`'s first frame per target with (φ_i, ψ_i) set, 1 ps apart; targets (n, n_res, 2) deg."""
    out = mdtraj.join([traj[0]] * len(targets_deg))
    out.time = np.arange(len(targets_deg), dtype=np.float64)
    top = out.topology
    for i, residue in enumerate(r for r in top.residues if r.name not in ("ACE", "NME")):
        atoms = {a.name: a.index for a in residue.atoms}
        later = [a.index for a in top.atoms if a.residue.index > residue.index]
        phi_side = [a.index for a in residue.atoms if a.name not in ("N", "H")] + later
        psi_side = [atoms["C"], atoms["O"]] + later
        for k, (origin, end, moving) in enumerate(((atoms["N"], atoms["CA"], phi_side),
                                                   (atoms["CA"], atoms["C"], psi_side))):
            current = backbone_dihedrals(out).angles[:, i, k]
            rotate(out.xyz, moving, origin, end, np.radians(targets_deg[:, i, k]) - current)
    return out


def metastable_torsions(n_frames, seed, stay=0.95, only_beta_first=False):
    """(n_frames, 2, 2) deg: each residue hops between BASINS (Markov, `stay` per frame) + noise."""
    rng = np.random.default_rng(seed)
    state = np.zeros((n_frames, 2), dtype=np.int64)
    for t in range(1, n_frames):
        flip = rng.random(2) > stay
        state[t] = np.where(flip, 1 - state[t - 1], state[t - 1])
    if only_beta_first:
        state[:, 0] = 0
    return BASINS[state] + rng.normal(scale=12.0, size=(n_frames, 2, 2))


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    built = mdtraj.load(str(build_peptide("AN", root / "system.pdb")))
    ref_dir, rep_dir, sam_dir = root / "md", root / "md" / "replicate", root / "samples"
    for folder in (rep_dir, sam_dir):
        folder.mkdir(parents=True)
    built.save_pdb(str(ref_dir / "topology.pdb"))
    for folder, seed, seconds in ((ref_dir, 1, 120.0), (rep_dir, 2, 60.0)):
        traj = set_backbone(built, metastable_torsions(600, seed))
        traj.save_xtc(str(folder / "traj.xtc"))
        (folder / "md.json").write_text(json.dumps(
            {"wall_seconds": seconds + 10.0, "production_wall_seconds": seconds, "n_frames": 600,
             "save_every_ps": 1.0}))
    chains, steps = 4, 100
    # Chain c at step s is frame s * chains + c; residue 1 never leaves beta (a biased sampler).
    per_chain = [metastable_torsions(steps, 10 + c, only_beta_first=True) for c in range(chains)]
    step_major = np.stack(per_chain, axis=1).reshape(steps * chains, 2, 2)
    heavy = set_backbone(built, step_major).atom_slice(built.topology.select("not element H"))
    ca = heavy.topology.select("resname ASN and name CA")[0]
    heavy.xyz[7, ca] += 0.05        # one broken frame: CA moved 0.05 nm
    heavy.xyz[9, :, 0] *= -1.0      # one mirrored (D) frame
    heavy.save_xtc(str(sam_dir / "samples.xtc"))
    heavy[0].save_pdb(str(sam_dir / "topology.pdb"))
    (sam_dir / "sample.json").write_text(json.dumps({"chains": chains, "n_samples": steps * chains,
                                                     "wall_seconds": 20.0}))
    return root, ref_dir, rep_dir, sam_dir


@pytest.fixture(scope="module")
def evaluated(run_dirs):
    root, ref_dir, rep_dir, sam_dir = run_dirs
    out = root / "evaluate" / "AN"
    metrics = evaluate_peptide("AN", EnsembleFiles.from_folders(ref_dir, rep_dir, sam_dir), out, EVAL_CFG, role="test")
    return out, metrics


def test_synthetic_trajectories_have_the_set_torsions(run_dirs):
    _, ref_dir, _, sam_dir = run_dirs
    targets = np.array([[[-60.0, 150.0], [70.0, -30.0]], [[-150.0, 170.0], [-65.0, -45.0]]])
    built = mdtraj.load(str(ref_dir / "topology.pdb"))
    achieved = np.degrees(backbone_dihedrals(set_backbone(built, targets)).angles)
    np.testing.assert_allclose(achieved, targets, atol=1e-3)
    samples = mdtraj.load(str(sam_dir / "samples.xtc"), top=str(sam_dir / "topology.pdb"))
    psi1 = np.degrees(backbone_dihedrals(samples).angles[:, 0, 1])
    from_beta = np.abs((psi1 - BASINS[0, 1] + 180.0) % 360.0 - 180.0)
    # Residue 1 stays beta in the biased samples, except the mirrored frame (dihedrals flip sign).
    assert np.all(np.delete(from_beta, 9) < 60.0) and from_beta[9] > 60.0


def test_outputs_and_metric_keys(evaluated):
    out, metrics = evaluated
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000
    identity = (metrics["peptide"], metrics["residues"], metrics["role"])
    assert identity == ("AN", "ALA-ASN", "test")
    keys = {"jsd_rama_1", "jsd_rama_2", "jsd_rama_mean", "jsd_1d_mean", "jsd_4d", "jsd_macrostates",
            "jsd_1d_phi_1", "jsd_1d_psi_2", "js_distance_rama_1", "js_distance_4d"}
    for section in ("jamun", "jamun_ci_low", "jamun_ci_high", "md_equal_time", "replicate_floor"):
        assert keys <= set(metrics[section])
        values = np.array([v for k, v in metrics[section].items() if k.startswith("jsd_")])
        assert np.all((values >= 0) & (values <= np.log(2) + 1e-12))
    jamun = metrics["jamun"]
    assert jamun["js_distance_rama_1"] == pytest.approx(np.sqrt(jamun["jsd_rama_1"]))
    assert metrics["jamun"]["jsd_rama_1"] > 3 * metrics["replicate_floor"]["jsd_rama_1"]  # residue 1 stuck in β
    assert jamun["jsd_1d_mean"] == pytest.approx(np.mean(
        [jamun[f"jsd_1d_{t}_{i}"] for i in (1, 2) for t in ("phi", "psi")]))
    for key in keys:
        assert metrics["jamun_ci_low"][key] <= metrics["jamun_ci_high"][key]


def test_rama_jsd_equals_an_independent_histogram_jsd(run_dirs, evaluated):
    """jsd_rama_<i> of the samples equals scipy's Jensen-Shannon distance squared (nats) between
    numpy 2D histograms of mdtraj's φ/ψ of residue i, bins_rama per angle over [-π, π)."""
    _, ref_dir, _, sam_dir = run_dirs
    _, metrics = evaluated
    reference = mdtraj.load(str(ref_dir / "traj.xtc"), top=str(ref_dir / "topology.pdb"))
    samples = mdtraj.load(str(sam_dir / "samples.xtc"), top=str(sam_dir / "topology.pdb"))
    edges = np.linspace(-np.pi, np.pi, EVAL_CFG["bins_rama"] + 1)

    def histogram(traj: mdtraj.Trajectory, i: int) -> np.ndarray:
        phi, psi = mdtraj.compute_phi(traj)[1][:, i], mdtraj.compute_psi(traj)[1][:, i]
        return np.histogram2d(phi, psi, bins=[edges, edges])[0].ravel()

    for i in (1, 2):
        expected = jensenshannon(histogram(reference, i - 1), histogram(samples, i - 1), base=np.e) ** 2
        assert metrics["jamun"][f"jsd_rama_{i}"] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_costs_and_frame_counts(evaluated):
    _, metrics = evaluated
    frames, timing = metrics["frames"], metrics["timing"]
    # Replicate: 60 s of production / 600 frames = 0.1 s per frame; the sampler's 20 s buy
    # 200 frames.
    assert timing["md_seconds_per_frame"] == pytest.approx(0.1)
    assert frames["md_equal_time"] == 200 and metrics["md_equal_time_capped"] is False
    assert frames["replicate_floor"] == frames["jamun"] == 400
    assert (frames["chains"], frames["steps"]) == (4, 100)
    jamun_curve, md_curve = metrics["curves"]["jamun"], metrics["curves"]["md_replicate"]
    assert jamun_curve["seconds"][-1] == pytest.approx(20.0)
    assert md_curve["seconds"][-1] == pytest.approx(60.0)
    assert all(f % 4 == 0 for f in jamun_curve["frames"])  # prefixes hold whole steps
    assert np.all(np.diff(jamun_curve["seconds"]) > 0)


def test_biased_sampler_scores_worse_than_the_floor(evaluated):
    _, metrics = evaluated
    # Residue 1 of the samples never visits alpha-R: far beyond the finite-sample floor.
    assert metrics["jamun"]["jsd_rama_1"] > 3 * metrics["replicate_floor"]["jsd_rama_1"]
    assert metrics["jamun"]["jsd_macrostates"] > metrics["replicate_floor"]["jsd_macrostates"]


def test_msm_and_validity_sections(evaluated):
    _, metrics = evaluated
    msm = metrics["msm"]
    assert msm["lag_frames"] == 2 and 1 <= msm["macrostates"] <= 4
    assert sum(msm["populations_reference"]) == pytest.approx(1.0)
    assert sum(msm["populations_jamun"]) == pytest.approx(1.0)
    assert 0.0 <= msm["unassigned_fraction_jamun"] <= 1.0
    assert len(msm["its_lags_ps"]) == len(msm["its_timescales_ps"])
    validity = metrics["validity"]
    assert validity["jamun"]["bonds_ok"] == pytest.approx(1 - 1 / 400)
    assert validity["jamun"]["l_chirality_ok"] == pytest.approx(1 - 1 / 400)
    assert validity["jamun"]["valid"] == pytest.approx(1 - 2 / 400)
    assert validity["md_replicate"]["valid"] == 1.0
    jamun, replicate = validity["jamun"], validity["md_replicate"]
    # The 0.05 nm CA shift breaks the tolerance, not the molecule.
    assert (jamun["chains"], jamun["chains_left_molecule"], jamun["left_molecule_fraction"]) \
        == (4, 0, 0.0)
    assert jamun["first_break_step"] == [None] * 4 and jamun["first_break_step_median"] is None
    assert jamun["valid_intact_chains"] == pytest.approx(jamun["valid"])
    assert jamun["l_chirality_per_ca"] == pytest.approx({"ALA1": 1 - 1 / 400, "ASN2": 1 - 1 / 400})
    assert (replicate["chains"], replicate["chains_left_molecule"]) == (1, 0)
    assert replicate["l_chirality_per_ca"] == {"ALA1": 1.0, "ASN2": 1.0}
    assert jamun["bond_length_mean_nm"] == pytest.approx(validity["reference_bond_length_mean_nm"],
                                                         rel=1e-3)


def test_validity_counts_chains_that_left_the_molecule(run_dirs):
    _, ref_dir, _, _ = run_dirs
    built = mdtraj.load(str(ref_dir / "topology.pdb"))
    heavy = built.atom_slice(built.topology.select("not element H"))
    chains, steps = 8, 10
    samples = mdtraj.join([heavy] * (chains * steps))
    n, ca, c, cb = (samples.topology.select(f"resname ALA and name {name}")[0]
                    for name in ("N", "CA", "C", "CB"))
    cacb = np.linalg.norm(heavy.xyz[0, cb] - heavy.xyz[0, ca])

    def stretch(step, chain, factor):  # CA-CB to `factor` x its length; CB is bonded to CA only
        frame = samples.xyz[step * chains + chain]
        frame[cb] = frame[ca] + factor * (frame[cb] - frame[ca])

    stretch(3, 6, 2.5)
    stretch(8, 6, 2.5)
    stretch(5, 2, 2.5)
    stretch(6, 4, 1.9)  # out of tolerance, still a molecule
    samples.xyz[8:16, :, 0] *= -1.0  # step 1 mirrored: both CAs D
    for frame in samples.xyz[16:20]:  # step 2, chains 0-3: ALA's CB reflected in N-CA-C, ALA D
        normal = np.cross(frame[n] - frame[ca], frame[c] - frame[ca])
        normal /= np.linalg.norm(normal)
        frame[cb] -= 2 * np.dot(frame[cb] - frame[ca], normal) * normal
    ensembles = Ensembles(built, built, samples, {}, {"samples": {"chains": chains}})
    validity = validity_section(ensembles, tolerance_nm=0.02)
    jamun = validity["jamun"]

    assert (jamun["chains"], jamun["chains_left_molecule"]) == (8, 2)
    assert jamun["left_molecule_fraction"] == 0.25
    assert jamun["first_break_step"] == [None, None, 5, None, None, None, 3, None]
    assert (jamun["first_break_step_earliest"], jamun["first_break_step_median"]) == (3, 4.0)
    assert jamun["l_chirality_per_ca"] == pytest.approx({"ALA1": 1 - 12 / 80, "ASN2": 1 - 8 / 80})
    assert jamun["l_chirality_ok"] == pytest.approx(1 - 12 / 80)
    assert jamun["bonds_ok"] == pytest.approx(1 - 4 / 80)
    assert jamun["valid"] == pytest.approx(1 - 16 / 80)
    # Chains 0, 1, 3, 4, 5, 7: 6 mirrored, 3 reflected and 1 stretched jump of 60.
    assert jamun["valid_intact_chains"] == pytest.approx(1 - 10 / 60)
    n_bonds = len(heavy_atom_bonds(built.topology))
    stretched = (3 * 1.5 + 0.9) * cacb / (chains * steps * n_bonds)
    assert jamun["bond_length_mean_nm"] == pytest.approx(
        validity["reference_bond_length_mean_nm"] + stretched, rel=1e-5)
    replicate = validity["md_replicate"]
    assert (replicate["chains"], replicate["chains_left_molecule"]) == (1, 0)
    assert (replicate["valid"], replicate["valid_intact_chains"]) == (1.0, 1.0)


def metrics_record(peptide, role, valid, l_chirality, jsd_jamun, jsd_equal_time, **validity):
    """The metrics.json keys the summary's target columns read."""
    return {"peptide": peptide, "role": role, "jamun": {"jsd_rama_mean": jsd_jamun},
            "md_equal_time": {"jsd_rama_mean": jsd_equal_time},
            "validity": {"jamun": {"valid": valid, "l_chirality_ok": l_chirality, **validity}}}


def test_summary_target_flags(tmp_path):
    records = {"AA": metrics_record("AA", "test", 0.95, 0.995, 0.1, 0.1,
                                    chains_left_molecule=0, left_molecule_fraction=0.0),
               "AN": metrics_record("AN", "test", 0.99, 0.994, 0.2, 0.1,
                                    chains_left_molecule=3, left_molecule_fraction=0.375),
               "GN": metrics_record("GN", "train", 0.5, 1.0, 0.05, 0.1)}  # older: no left count
    paths = []
    for name, record in records.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(record))
    table = metrics_table(paths).set_index("peptide")
    assert list(table.columns[1:7]) == [*HEADLINE, "meets_validity_target", "meets_jsd_target"]
    assert table["meets_validity_target"].tolist() == [True, False, False]
    assert table["meets_jsd_target"].tolist() == [True, False, True]
    assert table.loc["AN", "chains_left_molecule"] == 3
    assert table.loc["AN", "left_molecule_fraction"] == 0.375
    assert np.isnan(table.loc["GN", "chains_left_molecule"])


def test_summarize_table_and_figure(evaluated, tmp_path):
    out, metrics = evaluated
    train = dict(metrics, peptide="AA", role="train")
    (tmp_path / "train.json").write_text(json.dumps(train))
    table = summarize([tmp_path / "train.json", out / "metrics.json"], tmp_path / "summary")
    assert table["peptide"].tolist() == ["AN", "AA"]  # held-out first
    assert "jamun.jsd_rama_1" in table and "curves.jamun.seconds" not in table
    # valid 1 - 2/400 and L 1 - 1/400 meet the targets; the biased sampler misses the JSD one.
    assert table["meets_validity_target"].all() and (table["chains_left_molecule"] == 0).all()
    assert table["meets_jsd_target"].tolist() == [metrics["jamun"]["jsd_rama_mean"]
                                                  <= metrics["md_equal_time"]["jsd_rama_mean"]] * 2
    written = (tmp_path / "summary" / "metrics.csv").read_text().splitlines()
    assert len(written) == 3
    assert (tmp_path / "summary" / "summary.png").stat().st_size > 1000
    html = (tmp_path / "summary" / "metrics.html").read_text()  # the report's per-peptide table
    cells = re.findall(r"<t[dh]>(.*?)</t[dh]>", html)
    width = cells.index("JSD target met") + 1
    rows = [dict(zip(cells[:width], cells[k:k + width])) for k in range(width, len(cells), width)]
    assert [(r["peptide"], r["role"]) for r in rows] == [("AN", "test"), ("AA", "train")]
    assert {r["Rama JSD: JAMUN"] for r in rows} == {f"{metrics['jamun']['jsd_rama_mean']:.3f}"}


def test_bad_inputs_raise(run_dirs, tmp_path):
    _, ref_dir, rep_dir, sam_dir = run_dirs
    with pytest.raises(ValueError, match="role"):
        evaluate_peptide("AN", EnsembleFiles.from_folders(ref_dir, rep_dir, sam_dir), tmp_path, EVAL_CFG, role="held-out")
    with pytest.raises(ValueError, match="not peptide"):
        evaluate_peptide("GN", EnsembleFiles.from_folders(ref_dir, rep_dir, sam_dir), tmp_path, EVAL_CFG, role="train")
    with pytest.raises(ValueError, match="bins_2d"):
        evaluate_peptide("AN", EnsembleFiles.from_folders(ref_dir, rep_dir, sam_dir), tmp_path, {"bins_2d": 3}, role="train")
    with pytest.raises(FileNotFoundError, match="md.json"):
        evaluate_peptide("AN", EnsembleFiles.from_folders(tmp_path, rep_dir, sam_dir), tmp_path, EVAL_CFG, role="train")


def test_equal_time_prefix_from_timings():
    # 0.25 s per frame; 10 s of sampling buys 40 frames.
    cost = seconds_per_frame({"wall_seconds": 25.0, "n_frames": 100})
    prefix = equal_time_prefix(10.0, cost, 100)
    assert (prefix.frames, prefix.capped, prefix.seconds) == (40, False, pytest.approx(10.0))
    capped = equal_time_prefix(50.0, 0.25, 100)
    assert (capped.frames, capped.target_frames, capped.capped) == (100, 200, True)
    assert equal_time_prefix(0.01, 0.25, 100).frames == 1
    with pytest.raises(ValueError, match="n_frames"):
        seconds_per_frame({"wall_seconds": 1.0})
    # Production time is preferred: equilibration is paid once, not per frame.
    record = {"wall_seconds": 30.0, "production_wall_seconds": 25.0, "n_frames": 100}
    assert seconds_per_frame(record) == pytest.approx(0.25)


def test_sampler_seconds_are_shared_by_a_batch():
    assert sampler_seconds({"wall_seconds": 30.0}, "GN") == 30.0
    batch = {"wall_seconds": 30.0, "batch_peptides": ["GN", "AA", "DW"]}
    assert sampler_seconds(batch, "AA") == pytest.approx(10.0)
    with pytest.raises(ValueError, match="not for peptide"):
        sampler_seconds(batch, "FA")


def test_prefix_lengths_are_increasing_and_end_at_total():
    lengths = prefix_lengths(1000, 12)
    assert lengths[0] == 10 and lengths[-1] == 1000 and np.all(np.diff(lengths) > 0)
    assert prefix_lengths(3, 12).tolist() == [1, 2, 3]


def corrupted_copy(run_dirs, tmp_path, damage) -> EnsembleFiles:
    """The evaluation inputs copied to tmp_path, with ``damage(files)`` applied to the copy."""
    root, *_ = run_dirs
    shutil.copytree(root, tmp_path / "copy", ignore=shutil.ignore_patterns("evaluate"))
    files = EnsembleFiles.from_folders(tmp_path / "copy" / "md", tmp_path / "copy" / "md" / "replicate",
                                       tmp_path / "copy" / "samples")
    damage(files)
    return files


def truncate(path, fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def keep_frames(path, topology, frames):
    mdtraj.load(str(path), top=str(topology))[frames].save_xtc(str(path))


FAULTS = {
    "truncated reference": (lambda f: truncate(f.reference), "reference", "traj.xtc"),
    "garbage samples": (lambda f: f.samples.write_bytes(np.random.default_rng(0).bytes(5000)), "samples",
                        "samples.xtc"),
    "25 of 600 frames": (lambda f: keep_frames(f.reference, f.topology, slice(0, 25)), "reference",
                         "holds 25 frames, its run record says 600"),
    "frames out of order": (lambda f: keep_frames(f.replicate, f.topology, np.r_[300:600, 0:300]), "replicate",
                            "goes back in time"),
    "garbage md.json": (lambda f: f.replicate_record.write_bytes(b"\xff\xfe{"), "replicate_record", "not a JSON"),
    "md.json without n_frames": (lambda f: f.reference_record.write_text("{}"), "reference_record", "n_frames"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_damaged_inputs_are_refused_by_name(run_dirs, tmp_path, fault):
    """Each injected fault stops evaluation with one line naming the damaged file; nothing is written."""
    damage, field, complaint = FAULTS[fault]
    files = corrupted_copy(run_dirs, tmp_path, damage)
    out = tmp_path / "out"
    with pytest.raises(InputError) as raised:
        evaluate_peptide("AN", files, out, EVAL_CFG, role="test")
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(getattr(files, field))) and complaint in message
    assert not out.exists()
