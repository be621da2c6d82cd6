"""Training: outputs, exact resume, DDP = one big batch, NaN stop, integrity, noise and alignment,
sample checks choosing the checkpoint kept."""

import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.transform import Rotation

import jamun.model
import jamun.training.selection
from jamun.errors import InputError
from jamun.lock import WorkFolderBusy, owned
from jamun.data.dataset import EpochOrder, ShardSplit
from jamun.data.graph import batch_graphs, graph_mean
from jamun.data.kabsch import kabsch_rotations
from jamun.data.shards import read_peptides, write_shards
from jamun.training import train
from jamun.training.loop import exponential_average
from jamun.training.loss import DenoisingLoss
from jamun.training.noise import TRAIN_STREAM, batch_noise, corrupt, rank_noise
from jamun.training.sample_quality import QUALITY_COLUMNS, sample_quality
from jamun.training.schedule import learning_rate
from jamun.training.settings import train_settings

sys.path.insert(0, str(Path(__file__).parent))
from test_shards import ALA_PDB, GN_PDB, write_trajectory  # noqa: E402

TINY = {
    "sigma_nm": 0.04,
    "model": {"hidden_irreps": "4x0e + 2x1e", "num_layers": 2, "num_radial": 4, "radial_hidden": 8},
    "batch_size": 4, "lr": 0.002, "max_steps": 8, "max_minutes": None, "val_every": 4, "val_batches": 2,
    "checkpoint_every": 3, "ema_decay": None, "grad_clip": None, "seed": 0, "gpus": 0,
}  # fmt: skip


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    sources = [write_trajectory(root / "md", "A", ALA_PDB, 60, seed=1), write_trajectory(root / "md", "GN", GN_PDB, 60, seed=2)]
    write_shards("train", sources, root / "shards" / "train", frames_per_shard=50, seed=0)
    write_shards("val", sources, root / "shards" / "val", frames_per_shard=50, seed=1)
    return root / "shards"


@pytest.fixture(scope="module")
def validation_md(shards):
    """The fixture peptides' MD folders as ``jamun simulate`` leaves them, with their system.pdb."""
    folders = [shards.parent / "md" / peptide for peptide in ("A", "GN")]
    for folder in folders:
        shutil.copy(folder / "topology.pdb", folder / "system.pdb")
    return folders


CHECKS = {"every": 2, "chains": 2, "steps": 3, "burn_in": 1}


def train_on(shards: Path, out_dir: Path, cfg: dict, **options) -> dict:
    """``train`` on ``shards``/train, with ``shards``/val as the validation split where it exists."""
    val = shards / "val"
    return train(shards / "train", out_dir, cfg, val_shards=val if val.is_dir() else None, **options)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def state_dict(path: Path) -> dict:
    return jamun.model.read_checkpoint(path)["state_dict"]


def test_outputs_and_a_standalone_model(tmp_path, shards):
    summary = train_on(shards, tmp_path, TINY)
    assert {p.name for p in tmp_path.iterdir()} == {"model.ckpt", "metrics.csv", "loss.png", "train.json"}
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["step"]) == [0, 4, 8]
    assert metrics["train_loss"].iloc[1:].notna().all() and metrics["val_loss"].notna().all()
    assert (metrics["graphs_per_s"].iloc[1:] > 0).all() and metrics["data_wait_fraction"].iloc[1:].between(0, 1).all()
    assert json.loads((tmp_path / "train.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["steps"] == 8 and summary["stopped_by"] == "max_steps" and summary["C"] > 0
    assert summary["global_batch_size"] == 4 and summary["steps_per_epoch"] == 30
    model = jamun.model.load(tmp_path / "model.ckpt")
    assert model.C == summary["C"] and model.sigma == 0.04
    assert torch.load(tmp_path / "model.ckpt", weights_only=True)["train"]["steps"] == 8
    assert (summary["selected_step"], summary["selected_by"], summary["sample_checks"]) == (8, "last", [])
    assert metrics[list(QUALITY_COLUMNS)].isna().all().all()


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, shards):
    cfg = {**TINY, "ema_decay": 0.9, "grad_clip": 0.5}
    train_on(shards, tmp_path / "straight", cfg)
    assert train_on(shards, tmp_path / "resumed", cfg, interrupt_at_step=5) == {"interrupted_at_step": 5}
    work = tmp_path / "resumed" / ".work"
    assert sorted(p.name for p in work.glob("*.pt")) == ["last.pt", "step_00000003.pt"]
    assert not (tmp_path / "resumed" / "model.ckpt").exists()
    # A kill between checkpoints leaves the step-3 checkpoint as last.pt: resume from there.
    shutil.copy(work / "step_00000003.pt", work / "last.pt")
    summary = train_on(shards, tmp_path / "resumed", cfg)
    assert summary["resumed_from_steps"] == [3]
    straight, resumed = state_dict(tmp_path / "straight" / "model.ckpt"), state_dict(tmp_path / "resumed" / "model.ckpt")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)
    columns = ["step", "train_loss", "val_loss", "scaled_rmsd"]
    a = pd.read_csv(tmp_path / "straight" / "metrics.csv")[columns]
    b = pd.read_csv(tmp_path / "resumed" / "metrics.csv")[columns]
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)


def test_warm_start_begins_where_the_earlier_model_ended(tmp_path, shards):
    first = train_on(shards, tmp_path / "first", TINY)
    second = train_on(shards, tmp_path / "second", {**TINY, "max_steps": 4}, init_model=tmp_path / "first" / "model.ckpt")
    # The untrained baseline of the warm start (step 0, same fixed validation noise) is the
    # earlier model's final validation loss: training starts from its weights.
    baseline = pd.read_csv(tmp_path / "second" / "metrics.csv")["val_loss"].iloc[0]
    assert baseline == pytest.approx(first["final_val_loss"], rel=1e-6)
    assert baseline != pytest.approx(pd.read_csv(tmp_path / "first" / "metrics.csv")["val_loss"].iloc[0], rel=1e-3)
    assert second["initialised_from"]["steps"] == 8 and second["steps"] == 4
    wider = {**TINY, "model": {**TINY["model"], "hidden_irreps": "8x0e + 2x1e"}}
    with pytest.raises(ValueError, match="first/model.ckpt"):
        train_on(shards, tmp_path / "wider", wider, init_model=tmp_path / "first" / "model.ckpt")


def test_checkpoint_from_other_settings_is_ignored(tmp_path, shards):
    train_on(shards, tmp_path / "other", {**TINY, "lr": 0.01}, interrupt_at_step=4)
    shutil.copytree(tmp_path / "other", tmp_path / "run")
    summary = train_on(shards, tmp_path / "run", TINY)
    assert summary["resumed_from_steps"] == []
    train_on(shards, tmp_path / "fresh", TINY)
    for name, value in state_dict(tmp_path / "fresh" / "model.ckpt").items():
        torch.testing.assert_close(state_dict(tmp_path / "run" / "model.ckpt")[name], value, rtol=0, atol=0)


# The default model, and the issue-18 options together: energy output (double backward under DDP),
# channel-wise tensor product and noise levels drawn per graph (each rank takes its graphs' sigma).
ISSUE_18_OPTIONS = {"model": {**TINY["model"], "output": "energy", "tensor_product": "uvu"},
                    "sigma_range_nm": [0.02, 0.08]}


@pytest.mark.parametrize("options", [{}, ISSUE_18_OPTIONS], ids=["default", "energy-uvu-sigma-range"])
def test_two_gloo_ranks_equal_one_process_with_twice_the_batch(tmp_path, shards, validation_md, options):
    cfg = {**TINY, "max_steps": 3, "val_every": 3, "checkpoint_every": 10, "ema_decay": 0.5, "grad_clip": 0.5,
           **options}
    one = train_on(shards, tmp_path / "one", {**cfg, "batch_size": 4})
    # Rank 0 alone walks the final sample check (step 3, so the kept state is the last one) while
    # rank 1 finishes.
    two = train_on(shards, tmp_path / "two", {**cfg, "batch_size": 2, "sample_check": {**CHECKS, "every": 10}},
                nproc=2, threads=2, validation_md=validation_md)  # torchrun, gloo
    assert two["selected_step"] == 3 and two["selected_by"] == "sample_error"
    assert set(two["selected_sample_check"]["peptides"]) == {"A", "GN"}
    assert two["world_size"] == 2 and two["global_batch_size"] == one["global_batch_size"] == 4
    assert (one["process_group"], two["process_group"]) == (None, "gloo")  # DDP only in the group
    a, b = state_dict(tmp_path / "one" / "model.ckpt"), state_dict(tmp_path / "two" / "model.ckpt")
    torch.manual_seed(cfg["seed"])
    untrained = jamun.model.Denoiser(cfg, one["C"]).state_dict()
    assert max(float((a[k] - untrained[k]).abs().max()) for k in a if a[k].numel()) > 1e-3  # training moved them
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5)
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], rel=1e-5)
    assert two["final_train_loss"] == pytest.approx(one["final_train_loss"], rel=1e-5)


def test_nan_loss_stops_with_the_step_and_keeps_last_checkpoint(tmp_path, shards, monkeypatch):
    calls = {"n": 0}
    original = jamun.model.Denoiser.loss

    def loss(self, x, y, graph, **kwargs):
        calls["n"] += self.training
        value = original(self, x, y, graph, **kwargs)
        return value * math.nan if self.training and calls["n"] >= 5 else value

    monkeypatch.setattr(jamun.model.Denoiser, "loss", loss)
    with pytest.raises(FloatingPointError, match="step 5 is not finite"):
        train_on(shards, tmp_path, {**TINY, "val_every": 100})
    assert torch.load(tmp_path / ".work" / "last.pt", weights_only=True)["step"] == 3
    assert not (tmp_path / "model.ckpt").exists()


def test_nan_before_any_checkpoint_says_so_and_leaves_no_empty_folder(tmp_path, shards, monkeypatch):
    original = jamun.model.Denoiser.loss
    monkeypatch.setattr(jamun.model.Denoiser, "loss",
                        lambda self, *a, **k: original(self, *a, **k) * (math.nan if self.training else 1.0))
    with pytest.raises(FloatingPointError, match=r"step 1 is not finite; stopped, no checkpoint was written yet; "
                                                 r"a smaller train.lr \(now 0.01\)"):
        train_on(shards, tmp_path / "out", {**TINY, "lr": 0.01})
    assert not (tmp_path / "out").exists()


def test_damaged_last_checkpoint_falls_back_to_the_newest_numbered_one(tmp_path, shards, capfd):
    train_on(shards, tmp_path, TINY, interrupt_at_step=5)
    work = tmp_path / ".work"
    (work / "last.pt").unlink()  # a hard link of step 5's file: replace it by a torn copy
    (work / "last.pt").write_bytes((work / "step_00000003.pt").read_bytes()[:999])
    summary = train_on(shards, tmp_path, TINY)
    assert summary["resumed_from_steps"] == [3] and summary["steps"] == 8
    err = capfd.readouterr().err
    assert "last.pt (" in err and "damaged; resuming from step_00000003.pt" in err


def test_all_checkpoints_damaged_stops_instead_of_starting_over(tmp_path, shards):
    train_on(shards, tmp_path, TINY, interrupt_at_step=5)
    for checkpoint in (tmp_path / ".work").glob("*.pt"):
        checkpoint.unlink()
        checkpoint.write_bytes(b"torn")
    with pytest.raises(InputError, match=r"\.work: cannot resume: every checkpoint is damaged .*delete .* to start"):
        train_on(shards, tmp_path, TINY)


def test_a_live_owner_of_the_work_folder_is_refused(tmp_path, shards):
    with owned(tmp_path / ".work"):
        with pytest.raises(WorkFolderBusy, match=rf'\.work is in use by .*"pid": {os.getpid()}'):
            train_on(shards, tmp_path, TINY)
    assert train_on(shards, tmp_path, {**TINY, "max_steps": 2})["steps"] == 2


def test_time_cap_stops_early(tmp_path, shards):
    summary = train_on(shards, tmp_path, {**TINY, "max_minutes": 1e-6})
    assert summary["stopped_by"] == "max_minutes" and summary["steps"] == 1
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].iloc[-1] == 1


def test_corrupt_shard_stops_training_naming_the_file(tmp_path, shards):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    victim = copy / "train" / "shard_00001.frames.npy"
    victim.write_bytes(victim.read_bytes()[:-8])
    with pytest.raises(ValueError, match="shard_00001.frames.npy"):
        train_on(copy, tmp_path / "out", TINY)


def test_sample_checks_on_md_fill_metrics_and_train_json(tmp_path, shards, validation_md, capfd):
    summary = train_on(shards, tmp_path, {**TINY, "sample_check": {**CHECKS, "every": 4}}, validation_md=validation_md)
    metrics = pd.read_csv(tmp_path / "metrics.csv").set_index("step")
    assert list(metrics.index) == [0, 4, 8] and metrics.loc[0, list(QUALITY_COLUMNS)].isna().all()
    assert metrics.loc[[4, 8], ["valid", "bonds_ok", "l_chirality_ok", "left_molecule"]].stack().between(0, 1).all()
    assert (metrics.loc[[4, 8], "jsd_rama"] >= 0).all()
    checks = summary["sample_checks"]
    assert [c["step"] for c in checks] == [4, 8] and set(checks[0]["peptides"]) == {"A", "GN"}
    for check in checks:
        assert check["mean"] == pytest.approx(metrics.loc[check["step"], list(QUALITY_COLUMNS)].to_dict())
    best = min(checks, key=lambda c: c["mean"]["sample_error"])
    assert (summary["selected_step"], summary["selected_by"]) == (best["step"], "sample_error")
    assert summary["selected_sample_check"] == best
    assert torch.load(tmp_path / "model.ckpt", weights_only=True)["train"]["selected_step"] == best["step"]
    log = capfd.readouterr().err
    assert f"step 4: valid {checks[0]['mean']['valid']:.2f}, jsd_rama" in log and "(best)" in log


class ChosenErrors:
    """sample_quality stand-in: the n-th check scores ``errors[n]`` and records the state it saw."""

    def __init__(self, errors: list[float]) -> None:
        self.errors, self.states = errors, []

    def __call__(self, denoiser, peptides, walk, **scoring):
        self.states.append({k: v.clone() for k, v in denoiser.state_dict().items()})
        row = {**dict.fromkeys(QUALITY_COLUMNS, 0.5), "sample_error": self.errors[len(self.states) - 1]}
        return {"A": dict(row), "mean": row}


def test_checkpoint_kept_is_the_checked_state_with_the_lowest_sample_error(tmp_path, shards, validation_md,
                                                                           monkeypatch, capfd):  # fmt: skip
    scorer = ChosenErrors([0.9, 0.2, 0.5, 0.2])  # steps 2, 4, 6, 8; a tie keeps the earlier state
    monkeypatch.setattr(jamun.training.selection, "sample_quality", scorer)
    cfg = {**TINY, "ema_decay": 0.9, "val_every": 3, "sample_check": CHECKS}
    summary = train_on(shards, tmp_path, cfg, validation_md=validation_md)
    assert (summary["selected_step"], summary["selected_by"]) == (4, "sample_error")
    assert summary["selected_sample_check"]["mean"]["sample_error"] == 0.2
    kept = state_dict(tmp_path / "model.ckpt")
    for name, value in scorer.states[1].items():  # the scored (EMA) state of step 4
        torch.testing.assert_close(kept[name], value, rtol=0, atol=0)
    assert any(not torch.equal(scorer.states[3][name], kept[name]) for name in kept)
    metrics = pd.read_csv(tmp_path / "metrics.csv").set_index("step")
    assert list(metrics.index) == [0, 2, 3, 4, 6, 8] and metrics["val_loss"].notna().all()
    assert metrics["sample_error"].dropna().to_dict() == {2: 0.9, 4: 0.2, 6: 0.5, 8: 0.2}
    log = capfd.readouterr().err
    assert "step 4: valid 0.50, jsd_rama 0.50, left_molecule 0.50 (best)\n" in log
    assert "step 8: valid 0.50, jsd_rama 0.50, left_molecule 0.50\n" in log


def test_resume_with_sample_checks_is_exact_and_keeps_the_best_state(tmp_path, shards, validation_md, monkeypatch):
    cfg = {**TINY, "ema_decay": 0.9, "grad_clip": 0.5, "sample_check": CHECKS}
    torch.manual_seed(cfg["seed"])
    initial = jamun.model.Denoiser(cfg, json.loads((shards / "train" / "stats.json").read_text())["C"]).state_dict()

    def distance_from_initial(denoiser, peptides, walk, **scoring):
        """The real walk (it must not disturb training), scored by how far training moved the
        weights: the first check, before the interruption, is the best."""
        scores = sample_quality(denoiser, peptides, walk, **scoring)
        state = denoiser.state_dict()
        scores["mean"]["sample_error"] = float(sum((state[k] - initial[k]).square().sum() for k in initial))
        return scores

    monkeypatch.setattr(jamun.training.selection, "sample_quality", distance_from_initial)
    straight = train_on(shards, tmp_path / "straight", cfg, validation_md=validation_md)
    assert straight["selected_step"] == 2
    train_on(shards, tmp_path / "resumed", cfg, validation_md=validation_md, interrupt_at_step=5)
    work = tmp_path / "resumed" / ".work"
    shutil.copy(work / "step_00000003.pt", work / "last.pt")
    resumed = train_on(shards, tmp_path / "resumed", cfg, validation_md=validation_md)
    assert resumed["resumed_from_steps"] == [3]
    assert resumed["sample_checks"] == straight["sample_checks"] and resumed["selected_step"] == 2
    a, b = state_dict(tmp_path / "straight" / "model.ckpt"), state_dict(tmp_path / "resumed" / "model.ckpt")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    columns = ["step", "train_loss", "val_loss", *QUALITY_COLUMNS]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight" / "metrics.csv")[columns],
                                  pd.read_csv(tmp_path / "resumed" / "metrics.csv")[columns], rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "sample_check, message",
    [
        ({"evry": 5}, r"unknown key 'evry' in train\.sample_check settings; valid keys: every, chains, "),
        ({"every": 0}, r"train\.sample_check\.every = 0: must be null or an integer >= 1"),
        ({"every": 10, "chains": 0}, "train.sample_check.chains"),
        ({"steps": 20, "burn_in": 20}, r"sample_check\.burn_in = 20 must be less than train\.sample_check\.steps"),
        ({"bond_tolerance_nm": -0.1}, "train.sample_check.bond_tolerance_nm"),
        ({"bins_rama": 2.5}, "train.sample_check.bins_rama"),
        (10, r"train\.sample_check = 10: must be a mapping"),
    ],
)
def test_bad_sample_check_settings_are_named(sample_check, message):
    with pytest.raises(ValueError, match=message):
        train_settings({**TINY, "sample_check": sample_check})


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown key 'learning_rate' in train settings; valid keys: sigma_nm, "):
        train_settings({**TINY, "learning_rate": 1.0})
    with pytest.raises(ValueError, match="train.batch_size"):
        train_settings({**TINY, "batch_size": 0})
    with pytest.raises(ValueError, match="train.ema_decay"):
        train_settings({**TINY, "ema_decay": 1.0})
    with pytest.raises(ValueError, match="train.lr_schedule = \"linear\": must be one of constant, cosine"):
        train_settings({**TINY, "lr_schedule": "linear"})
    with pytest.raises(ValueError, match="train.lr_warmup_steps = 8 must be less than train.max_steps = 8"):
        train_settings({**TINY, "lr_warmup_steps": TINY["max_steps"]})
    with pytest.raises(ValueError, match="train.bond_loss_weight"):
        train_settings({**TINY, "bond_loss_weight": -1.0})


def test_learning_rate_schedules():
    assert [learning_rate(k, 1.0, "constant", 4, 100) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cosine = [learning_rate(k, 2.0, "cosine", 0, 10) for k in range(12)]
    assert cosine[0] == 2.0 and cosine[5] == pytest.approx(1.0) and cosine[10] == cosine[11] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(cosine[:10], cosine[1:11]))
    assert learning_rate(3, 1.0, "cosine", 2, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))


def test_cosine_resume_is_exact_and_needs_the_same_max_steps(tmp_path, shards):
    cfg = {**TINY, "lr_schedule": "cosine", "lr_warmup_steps": 2, "bond_loss_weight": 5.0}
    train_on(shards, tmp_path / "straight", cfg)
    train_on(shards, tmp_path / "resumed", cfg, interrupt_at_step=5)
    assert train_on(shards, tmp_path / "resumed", cfg)["resumed_from_steps"] == [5]
    straight, resumed = state_dict(tmp_path / "straight" / "model.ckpt"), state_dict(tmp_path / "resumed" / "model.ckpt")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)
    # Another max_steps is another schedule: the interrupted run is not resumed.
    train_on(shards, tmp_path / "longer", cfg, interrupt_at_step=5)
    assert train_on(shards, tmp_path / "longer", {**cfg, "max_steps": 10})["resumed_from_steps"] == []


def test_noise_is_fixed_by_seed_and_step_and_shared_across_ranks():
    a = batch_noise(0, 1, 7, 50, torch.device("cpu"))
    assert torch.equal(a, batch_noise(0, 1, 7, 50, torch.device("cpu")))
    assert not torch.equal(a, batch_noise(0, 1, 8, 50, torch.device("cpu")))
    assert not torch.equal(a, batch_noise(1, 1, 7, 50, torch.device("cpu")))
    assert abs(float(a.mean())) < 0.3 and 0.7 < float(a.std()) < 1.3


def test_rank_noise_is_the_ranks_rows_of_the_global_draw(shards):
    order, cpu = EpochOrder(ShardSplit(shards / "train"), seed=0), torch.device("cpu")
    whole = order.batch(0, 0, 6)
    parts = torch.cat([rank_noise(0, TRAIN_STREAM, 3, order.batch(0, 0, 6, rank, 3), cpu) for rank in range(3)])
    torch.testing.assert_close(parts, batch_noise(0, TRAIN_STREAM, 3, whole.global_atoms, cpu), rtol=0, atol=0)
    assert len(parts) == len(whole.positions)


def test_equal_rank_slices_average_to_the_global_batch_loss_and_gradient(shards):
    """DDP averages the ranks' gradients. That is the gradient of the global batch's loss because
    the loss weights graphs (not atoms) equally and training ranks hold equal numbers of graphs;
    the batch mixes peptides of different sizes, so a mean over atoms would fail here."""
    order = EpochOrder(ShardSplit(shards / "train"), seed=0)
    torch.manual_seed(0)
    C = json.loads((shards / "train" / "stats.json").read_text())["C"]
    objective = DenoisingLoss(jamun.model.Denoiser(TINY, C), bond_weight=5.0)

    def loss_and_gradient(rank: int, world_size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        frames = order.batch(0, 0, 8, rank, world_size)
        assert frames.graph.num_graphs == 8 // world_size
        objective.zero_grad()
        loss = objective(frames.positions, rank_noise(0, TRAIN_STREAM, 0, frames, torch.device("cpu")), frames.graph)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in objective.parameters() if p.numel()]

    assert len(set(torch.bincount(order.batch(0, 0, 8).graph.batch).tolist())) > 1  # peptides of two sizes
    whole, whole_gradient = loss_and_gradient(0, 1)
    (loss_0, gradient_0), (loss_1, gradient_1) = loss_and_gradient(0, 2), loss_and_gradient(1, 2)
    torch.testing.assert_close((loss_0 + loss_1) / 2, whole, rtol=1e-6, atol=0)
    for g, g0, g1 in zip(whole_gradient, gradient_0, gradient_1):
        torch.testing.assert_close((g0 + g1) / 2, g, rtol=1e-5, atol=1e-7)


def test_ema_starts_at_the_initial_weights_and_warms_its_decay_up():
    """The EMA (torch.optim.swa_utils) starts at the initial weights w0 and after step t lerps
    towards w_t by 1 - min(decay, (1 + t) / (10 + t)): at decay 0.5 the decays of steps 1..9 are
    2/11, 3/12, ..., 9/18 = 0.5, 0.5; its state_dict has the model's keys (model.ckpt)."""
    torch.manual_seed(0)
    model = jamun.model.Denoiser(TINY, 0.1)
    expected = {k: v.clone() for k, v in model.named_parameters()}
    ema = exponential_average(model, 0.5)
    decays = [2 / 11, 3 / 12, 4 / 13, 5 / 14, 6 / 15, 7 / 16, 8 / 17, 0.5, 0.5]
    for decay in decays:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        for name, w in model.named_parameters():
            expected[name] = decay * expected[name] + (1 - decay) * w.detach()
        ema.update_parameters(model)
    averaged = dict(ema.module.named_parameters())
    for name, w in expected.items():
        torch.testing.assert_close(averaged[name], w, rtol=1e-5, atol=1e-6)
        assert w.numel() == 0 or not torch.allclose(averaged[name], dict(model.named_parameters())[name])
    assert int(ema.n_averaged) == len(decays) + 1
    assert list(ema.module.state_dict()) == list(model.state_dict())


def test_corrupt_centres_and_rotates_without_reflecting(shards):
    _, features = read_peptides(shards / "train")
    graph = batch_graphs([features[0], features[1], features[0]])
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(scale=0.3, size=(graph.num_atoms, 3)))
    # Rotating and moving the noisy copy must not matter: corrupt() undoes any rigid motion.
    rot = torch.tensor(Rotation.random(random_state=1).as_matrix())
    eta = torch.tensor(rng.normal(size=x.shape))
    x_c, y = corrupt(x, eta, 0.04, graph)
    torch.testing.assert_close(graph_mean(x_c, graph), torch.zeros(3, 3, dtype=x.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(graph_mean(y, graph), torch.zeros(3, 3, dtype=x.dtype), atol=1e-12, rtol=0)
    # y is already optimally aligned: a second Kabsch finds the identity.
    rots = kabsch_rotations(y, x_c, graph)
    torch.testing.assert_close(rots, torch.eye(3, dtype=x.dtype).expand(3, 3, 3), atol=1e-9, rtol=0)
    rmsd = (y - x_c).square().sum(1).mean().sqrt()
    assert 0.5 * 0.04 * math.sqrt(3) < rmsd < 0.04 * math.sqrt(3)  # alignment removes some noise
    x_moved = x @ rot.T + 1.0
    _, y_moved = corrupt(x_moved, eta @ rot.T, 0.04, graph)
    torch.testing.assert_close(y_moved, y @ rot.T, atol=1e-9, rtol=0)


def _val_losses(shards: Path, model) -> dict[str, float]:
    """DESIGN §5 loss over every val frame (fixed test noise) of the trained model, of the identity
    xhat = c_skip y, and of the best global rescale xhat = a y (a fitted on these very frames)."""
    from jamun.data.dataset import EpochOrder, ShardSplit

    data, p = ShardSplit(shards / "val"), model.preconditioning
    order, generator = EpochOrder(data, seed=0), torch.Generator().manual_seed(123)
    sums = dict.fromkeys(("trained", "identity", "xx", "xy", "yy"), 0.0)
    with torch.no_grad():
        for start in range(0, data.n_frames, 50):
            frames = order.batch(0, start, min(start + 50, data.n_frames))
            graph = frames.graph
            x, y = corrupt(frames.positions, torch.randn(frames.positions.shape, generator=generator), model.sigma, graph)
            per_graph = {
                "trained": (model.xhat(y, graph) - x).square().sum(1), "identity": (p.c_skip * y - x).square().sum(1),
                "xx": (x * x).sum(1), "xy": (x * y).sum(1), "yy": (y * y).sum(1),
            }  # fmt: skip
            for key, value in per_graph.items():
                sums[key] += float(graph_mean(value, graph).sum())
    # The loss of a y is quadratic in a: (xx - 2 a xy + a^2 yy) / c_out^2, minimal at a = xy / yy.
    a = sums["xy"] / sums["yy"]
    losses = {k: sums[k] / data.n_frames / p.c_out**2 for k in ("trained", "identity")}
    losses["rescale"] = (sums["xx"] - 2 * a * sums["xy"] + a * a * sums["yy"]) / data.n_frames / p.c_out**2
    return {**losses, "a": a}


@pytest.mark.slow
def test_denoiser_learns_structure_that_a_global_rescale_cannot(tmp_path):
    pdbs = {"A": ALA_PDB, "GN": GN_PDB}
    flexible = {"noise_nm": 0.005, "torsion_deg": 15.0}  # rigid bonds, two basins per phi/psi
    for split, frames, seed in (("train", 1000, 0), ("val", 200, 10)):
        sources = [write_trajectory(tmp_path / split, p, pdb, frames, seed=seed + k, **flexible)
                   for k, (p, pdb) in enumerate(pdbs.items())]  # fmt: skip
        write_shards(split, sources, tmp_path / "shards" / split, frames_per_shard=500, seed=0)
    cfg = {**TINY, "model": {"hidden_irreps": "16x0e + 4x1e", "num_layers": 2, "num_radial": 8, "radial_hidden": 16},
           "batch_size": 16, "lr": 0.005, "max_steps": 120, "max_minutes": 2.0, "val_every": 40,
           "val_batches": 4, "checkpoint_every": 1000}  # fmt: skip
    summary = train_on(tmp_path / "shards", tmp_path / "out", cfg, threads=1)
    losses = _val_losses(tmp_path / "shards", jamun.model.load(tmp_path / "out" / "model.ckpt"))
    print(f"steps {summary['steps']}, wall {summary['wall_seconds']:.0f} s, val losses {losses}")
    assert losses["trained"] <= 0.8 * losses["identity"]
    assert losses["rescale"] > 0.8 * losses["identity"]  # the bar needs structure, not a global shrinkage
