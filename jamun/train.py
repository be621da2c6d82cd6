"""Training the JAMUN denoiser on shards at one fixed noise level (docs/design.md §5, §8).

Each step: clean heavy-atom frames x of the global batch, x centred, y = x + sigma eta, y centred
and Kabsch-aligned onto x (rotation only), loss = ``Denoiser.loss(x, y, graph)``, Adam.

Reproducibility: the frames of a step follow from (seed, step) (:mod:`jamun.data.dataset`) and the
noise of a step is drawn for the whole global batch from a generator seeded by (seed, step), of
which each rank takes its atoms. So W processes with batch b follow the same trajectory as one
process with batch W b, and a run resumed from ``OUT/.work/last.pt`` continues exactly where it
stopped. Checkpoints (model, optimizer, EMA, RNG states, step, metrics so far) live in the
undeclared ``OUT/.work/`` until the outputs are written; a checkpoint made with other settings,
another world size or other shards is ignored. Run ``python -m jamun.train --help`` or call
:func:`train`.

Checkpoint selection: with ``train.sample_check.every`` set and validation MD folders given, rank 0
walks a few chains of every validation peptide with the evaluated model (the EMA model if EMA is on)
every ``every`` steps and at the end (:mod:`jamun.training.sample_quality`). ``model.ckpt`` is the
state with the lowest mean ``sample_error`` (the earliest on ties), otherwise the last state. The
best state so far is part of the work checkpoint, and the walk uses its own seeded generator, so a
resumed run still matches an uninterrupted one exactly.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from jamun.data.dataset import EpochOrder, ShardSplit
from jamun.data.shards import MANIFEST, STATS, sha256_file
from jamun.model import Denoiser, read_checkpoint, save
from jamun.model.pretrained import file_sha256
from jamun.training.distributed import (
    Context, all_reduce_sum, broadcast_module, in_launched_group, launch, reduce_gradients, setup, teardown,
)  # fmt: skip
from jamun.training.noise import TRAIN_STREAM, VAL_STREAM, batch_noise, corrupt
from jamun.training.report import plot_losses, write_metrics
from jamun.training.sample_quality import load_validation_peptide, sample_quality
from jamun.training.schedule import learning_rate
from jamun.training.settings import train_settings
from jamun.training.state import load_state, rng_state, save_atomic, set_rng_state

__all__ = ["train", "main"]

# Settings that may change between a stop and a resume without changing what training computes
# (max_steps only with a constant learning rate: a decaying schedule ends at max_steps).
_RESUMABLE_CHANGES = ("max_steps", "max_minutes", "checkpoint_every", "val_every", "val_batches", "gpus")
_KEEP_NUMBERED = 3  # numbered checkpoints kept in .work besides last.pt


class _Trainer:
    """One process's training run; rank 0 writes checkpoints and outputs."""

    def __init__(
        self, train_shards: Path, val_shards: Path | None, out_dir: Path, settings: dict, ctx: Context,
        validation_md: Sequence[Path],
        init_model: Path | None = None,
    ) -> None:
        self.s, self.ctx, self.out_dir, self.work = settings, ctx, out_dir, out_dir / ".work"
        # Known on every rank (a check step also logs a row, and validation is collective);
        # only rank 0 loads the peptides and walks.
        self.checks_on = settings["sample_check"]["every"] is not None and len(validation_md) > 0
        if settings["sample_check"]["every"] is not None and not validation_md and ctx.is_main:
            print("train.sample_check.every is set but no validation MD folders were given: no sample checks, "
                  "model.ckpt will be the last state", file=sys.stderr)  # fmt: skip
        loads = self.checks_on and ctx.is_main
        self.check_peptides = [load_validation_peptide(d) for d in validation_md] if loads else []
        self.train_data = ShardSplit(train_shards)
        self.val_data = ShardSplit(val_shards) if val_shards is not None else None
        self.C = float(json.loads((train_shards / STATS).read_text())["C"])
        self.global_batch = settings["batch_size"] * ctx.world_size
        self.steps_per_epoch = self.train_data.n_frames // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{train_shards} holds {self.train_data.n_frames} frames, fewer than one global batch "
                f"({settings['batch_size']} x {ctx.world_size} processes); lower train.batch_size"
            )
        torch.manual_seed(settings["seed"])
        self.model = Denoiser(settings, self.C).to(ctx.device)
        self.initialised_from = self._initialise(init_model) if init_model is not None else None
        broadcast_module(self.model, ctx)
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=settings["lr"])
        self.ema = copy.deepcopy(self.model) if settings["ema_decay"] else None
        self.resume_key = json.dumps(
            {
                "settings": {
                    k: v for k, v in settings.items()
                    if k not in _RESUMABLE_CHANGES or (k == "max_steps" and settings["lr_schedule"] != "constant")
                },
                "world_size": ctx.world_size,
                "train_manifest_sha256": sha256_file(train_shards / MANIFEST),
                "sample_check_peptides": [Path(d).name for d in validation_md] if self.checks_on else [],
                "initialised_from": self.initialised_from and self.initialised_from["sha256"],
            },
            sort_keys=True,
        )
        self.step, self.wall_before, self.history, self.resumed_from = 0, 0.0, [], []
        # sample_checks: per check {step, peptides, mean}; best: {step, sample_error, state} of the
        # lowest mean sample_error so far (rank 0 only; state on the CPU).
        self.sample_checks: list[dict] = []
        self.best: dict | None = None
        self.interval = dict.fromkeys(("loss", "steps", "graphs", "t_data", "t_step"), 0.0)
        self._restore()

    def _initialise(self, init_model: Path) -> dict:
        """Start from the weights of a saved model of the same architecture (a warm start: the
        optimizer, schedule and step count start afresh); returns its provenance for train.json."""
        checkpoint = read_checkpoint(init_model)
        if dict(checkpoint["model_config"]) != dict(self.model.config):
            raise ValueError(f"--init-model {init_model} is a {checkpoint['model_config']} model; train.model and "
                             f"sigma_nm ask for {dict(self.model.config)}")
        self.model.load_state_dict(checkpoint["state_dict"])
        before = checkpoint.get("train") or {}
        return {"file": str(init_model), "sha256": file_sha256(init_model), "steps": before.get("steps"),
                "wall_seconds": before.get("wall_seconds"), "device": before.get("device"),
                "initialised_from": before.get("initialised_from")}

    # ---- checkpoints -------------------------------------------------------------------
    def _restore(self) -> None:
        last = self.work / "last.pt"
        if not last.is_file():
            return
        state = load_state(last)
        if state["resume_key"] != self.resume_key:
            if self.ctx.is_main:  # other ranks cannot be past their own check: no step has run yet
                print(f"discarding {self.work}: made with other settings, world size or shards", file=sys.stderr)
                shutil.rmtree(self.work)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.step, self.wall_before = state["step"], state["wall_s"]
        self.history, self.interval = state["history"], state["interval"]
        self.sample_checks, self.best = state["sample_checks"], state["best"]
        self.resumed_from = state["resumed_from"] + [self.step]

    def _checkpoint(self, wall: float, numbered: bool) -> None:
        if not self.ctx.is_main:
            return
        epoch, k = divmod(self.step, self.steps_per_epoch)
        state = {
            "resume_key": self.resume_key, "step": self.step, "epoch": epoch, "position": k * self.global_batch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(), "rng": rng_state(), "wall_s": wall,
            "history": self.history, "interval": self.interval, "resumed_from": self.resumed_from,
            "sample_checks": self.sample_checks, "best": self.best,
        }  # fmt: skip
        if not numbered:
            save_atomic(state, self.work / "last.pt")
            return
        path = save_atomic(state, self.work / f"step_{self.step:08d}.pt")
        tmp = self.work / ".last.pt.link"
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)  # last.pt becomes the same file, atomically, without a second write
        os.replace(tmp, self.work / "last.pt")
        for old in sorted(self.work.glob("step_*.pt"))[:-_KEEP_NUMBERED]:
            old.unlink()

    # ---- steps ---------------------------------------------------------------------------
    def _train_step(self, order: EpochOrder, over_time: bool) -> tuple[float, bool]:
        t0 = time.perf_counter()
        epoch, k = divmod(self.step, self.steps_per_epoch)
        start = k * self.global_batch
        frames = order.batch(epoch, start, start + self.global_batch, self.ctx.rank, self.ctx.world_size)
        graph, x = frames.graph.to(self.ctx.device), frames.positions.to(self.ctx.device)
        eta = batch_noise(self.s["seed"], TRAIN_STREAM, self.step, frames.global_atoms, self.ctx.device)
        eta = eta[frames.atom_offset : frames.atom_offset + len(x)]
        t_data = time.perf_counter() - t0
        x, y = corrupt(x, eta, self.s["sigma_nm"], graph)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        lr = learning_rate(self.step, self.s["lr"], self.s["lr_schedule"], self.s["lr_warmup_steps"],
                           self.s["max_steps"])  # fmt: skip
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.model.loss(x, y, graph, bond_weight=self.s["bond_loss_weight"])
        loss.backward()
        flags = torch.tensor([0.0, float(over_time)], dtype=torch.float64, device=x.device)
        flags[0] = loss.detach()
        flags = reduce_gradients(self.params, flags, self.ctx)
        mean_loss = float(flags[0]) / self.ctx.world_size
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.s["grad_clip"] or math.inf))
        if not (math.isfinite(mean_loss) and math.isfinite(norm)):
            raise FloatingPointError(
                f"training loss {mean_loss} (gradient norm {norm}) at step {self.step + 1} is not finite; "
                f"stopped, the last good checkpoint is kept in {self.work / 'last.pt'}"
            )
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema.parameters(), self.params):
                    e.lerp_(p, 1.0 - self.s["ema_decay"])
        self.step += 1
        for key, value in (("loss", mean_loss), ("steps", 1), ("graphs", self.global_batch), ("t_data", t_data),
                           ("t_step", time.perf_counter() - t0)):  # fmt: skip
            self.interval[key] += value
        return mean_loss, float(flags[1]) > 0

    @torch.no_grad()
    def _validate(self, order: EpochOrder) -> tuple[float, float]:
        """Validation loss and scaled RMSD on the first val_batches global batches (fixed noise)."""
        model = self.ema or self.model
        model.eval()
        n, b = self.val_data.n_frames, self.global_batch
        sums = torch.zeros(2, dtype=torch.float64, device=self.ctx.device)
        for k in range(min(self.s["val_batches"], math.ceil(n / b))):
            frames = order.batch(0, k * b, min((k + 1) * b, n), self.ctx.rank, self.ctx.world_size)
            if frames.graph is None:
                continue
            graph, x = frames.graph.to(self.ctx.device), frames.positions.to(self.ctx.device)
            eta = batch_noise(self.s["seed"], VAL_STREAM, k, frames.global_atoms, self.ctx.device)
            x, y = corrupt(x, eta[frames.atom_offset : frames.atom_offset + len(x)], self.s["sigma_nm"], graph)
            sums[0] += model.loss(x, y, graph).double() * graph.num_graphs
            sums[1] += graph.num_graphs
        loss = float(all_reduce_sum(sums, self.ctx)[0] / sums[1])
        # Per-atom RMS error (graphs weighted equally) over sigma sqrt(3): xhat = y scores 1.
        return loss, model.preconditioning.c_out * math.sqrt(loss) / (self.s["sigma_nm"] * math.sqrt(3))

    def _log(self, wall: float, val_order: EpochOrder | None) -> None:
        val_loss, scaled_rmsd = self._validate(val_order) if val_order else (math.nan, math.nan)
        i = self.interval
        self.history.append({
            "step": self.step, "epoch": self.step / self.steps_per_epoch,
            "train_loss": i["loss"] / i["steps"] if i["steps"] else math.nan,
            "val_loss": val_loss, "scaled_rmsd": scaled_rmsd,
            "graphs_per_s": i["graphs"] / i["t_step"] if i["steps"] else math.nan,
            "data_wait_fraction": i["t_data"] / i["t_step"] if i["steps"] else math.nan, "elapsed_s": wall,
        })  # fmt: skip
        self.interval = dict.fromkeys(self.interval, 0.0)

    def _sample_check(self) -> None:
        """Walk-jump the validation peptides with the evaluated model (rank 0 only) and score the
        jumps into the last history row; keep the model state if its mean sample_error is the
        lowest so far."""
        if not self.ctx.is_main:
            return  # the other ranks go on and wait at the next collective
        c, model = self.s["sample_check"], self.ema or self.model
        walk = {"chains": c["chains"], "steps": c["steps"], "burn_in": c["burn_in"], "seed": self.s["seed"]}
        scores = sample_quality(model, self.check_peptides, walk, bond_tolerance_nm=c["bond_tolerance_nm"],
                                bins=c["bins_rama"])  # fmt: skip
        mean = scores.pop("mean")
        self.history[-1].update(mean)
        self.sample_checks.append({"step": self.step, "peptides": scores, "mean": mean})
        error = mean["sample_error"] if math.isfinite(mean["sample_error"]) else math.inf
        best = self.best is None or error < self.best["sample_error"]
        if best:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.best = {"step": self.step, "sample_error": error, "state": state}
        line = f"step {self.step}: " + ", ".join(f"{k} {mean[k]:.2f}" for k in ("valid", "jsd_rama", "left_molecule"))
        tqdm.write(line + (" (best)" if best else ""), file=sys.stderr)

    # ---- the run -------------------------------------------------------------------------
    def run(self, interrupt_at_step: int | None) -> dict:
        s, started = self.s, time.perf_counter()
        wall = lambda: self.wall_before + time.perf_counter() - started  # noqa: E731
        order = EpochOrder(self.train_data, s["seed"])
        val_order = EpochOrder(self.val_data, s["seed"]) if self.val_data else None
        if not self.history:
            self._log(wall(), val_order)  # the untrained baseline
        stopped_by = "max_steps"
        bar = tqdm(total=s["max_steps"], initial=self.step, desc="train", unit="step", file=sys.stderr,
                   disable=not self.ctx.is_main)  # fmt: skip
        while self.step < s["max_steps"]:
            over_time = s["max_minutes"] is not None and wall() > 60 * s["max_minutes"]
            loss, stop = self._train_step(order, over_time)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if stop:
                stopped_by = "max_minutes"
                break
            check_due = self.checks_on and self.step % s["sample_check"]["every"] == 0
            if check_due or self.step % s["val_every"] == 0:
                self._log(wall(), val_order)
            if check_due:
                self._sample_check()
            if self.step % s["checkpoint_every"] == 0:
                self._checkpoint(wall(), numbered=True)
            if self.step == interrupt_at_step:
                self._checkpoint(wall(), numbered=False)
                bar.close()
                return {"interrupted_at_step": self.step}
        bar.close()
        if self.history[-1]["step"] != self.step:
            self._log(wall(), val_order)
        if self.checks_on and (not self.sample_checks or self.sample_checks[-1]["step"] != self.step):
            self._sample_check()
        self._checkpoint(wall(), numbered=False)  # outputs below can be rewritten from it if killed
        return self._finish(stopped_by, wall())

    def _finish(self, stopped_by: str, wall: float) -> dict:
        from jamun.provenance import package_versions

        last, model = self.history[-1], self.ema or self.model
        if self.best is not None:  # rank 0 with sample checks: keep the best state, not the last
            model.load_state_dict(self.best["state"])
        selected = self.best["step"] if self.best else self.step
        summary = {
            "parameters": self.s, "model_config": model.config,
            "n_parameters": self.model.num_parameters(), "C": self.C, "sigma_nm": self.s["sigma_nm"],
            "steps": self.step, "stopped_by": stopped_by, "epochs": self.step / self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch, "global_batch_size": self.global_batch,
            "world_size": self.ctx.world_size, "train_frames": self.train_data.n_frames,
            "train_peptides": self.train_data.peptides,
            "val_frames": self.val_data.n_frames if self.val_data else 0,
            "val_peptides": self.val_data.peptides if self.val_data else [],
            "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
            "final_scaled_rmsd": last["scaled_rmsd"], "ema": self.ema is not None,
            "wall_seconds": wall, "resumed_from_steps": self.resumed_from,
            "device": torch.cuda.get_device_name(self.ctx.device) if self.ctx.device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "versions": package_versions(),
            "process_group": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
            "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated(self.ctx.device) / 2**30
                                    if self.ctx.device.type == "cuda" else None),
            "initialised_from": self.initialised_from,
            "selected_step": selected, "selected_by": "sample_error" if self.best else "last",
            "selected_sample_check": next((c for c in self.sample_checks if c["step"] == selected), None),
            "sample_checks": self.sample_checks,
        }  # fmt: skip
        if self.ctx.is_main:
            table = write_metrics(self.history, self.out_dir / "metrics.csv")
            plot_losses(table, self.out_dir / "loss.png", title=f"denoiser, sigma = {self.s['sigma_nm']} nm",
                        selected_step=selected)
            tmp = self.out_dir / ".train.json.tmp"
            tmp.write_text(json.dumps(summary, indent=1))
            os.replace(tmp, self.out_dir / "train.json")
            save(model, self.out_dir / "model.ckpt", train=summary)
            shutil.rmtree(self.work)
        return summary


def train(
    train_shards: Path,
    out_dir: Path,
    train_cfg: Mapping,
    *,
    val_shards: Path | None = None,
    validation_md: Sequence[Path] = (),
    init_model: Path | None = None,
    threads: int | None = None,
    nproc: int | None = None,
    interrupt_at_step: int | None = None,
) -> dict:
    """Train a denoiser on the ``train_shards`` folder and write ``out_dir``/{model.ckpt,
    metrics.csv, loss.png, train.json}; resumes from ``out_dir``/.work/last.pt if present.

    Parameters
    ----------
    val_shards
        The validation split's shard folder; None: no validation loss.
    train_cfg
        The ``train:`` config section; missing keys take the schema's defaults
        (:func:`jamun.training.settings.train_settings`). ``batch_size`` is per process.
    validation_md
        MD folders (``results/md/<peptide>``: system.pdb, traj.xtc, topology.pdb) of the
        validation peptides for the sample checks that choose ``model.ckpt`` (with
        ``train.sample_check.every`` set); none: ``model.ckpt`` is the last state.
    init_model
        A checkpoint of the same architecture whose weights training starts from (warm start).
    threads
        torch CPU threads of the node, split evenly between its processes (LOCAL_WORLD_SIZE).
    nproc
        Processes; default ``max(1, train_cfg["gpus"])``. Above 1 (and not already inside a
        torchrun group) this launches ``torchrun`` with ``python -m jamun.train`` and waits.
        On CPU, nproc > 1 runs gloo processes (tests).
    interrupt_at_step
        Stop once this step is done, leaving only ``.work/last.pt`` as a killed run would (tests).

    Returns
    -------
    The ``train.json`` content (or ``{"interrupted_at_step": k}``).
    """
    settings = train_settings(train_cfg)
    train_shards, out_dir = Path(train_shards), Path(out_dir)
    val_shards = Path(val_shards) if val_shards is not None else None
    nproc = nproc or max(1, settings["gpus"])
    if nproc > 1 and not in_launched_group():
        out_dir.mkdir(parents=True, exist_ok=True)
        args = [str(train_shards), str(out_dir), "--settings", json.dumps(dict(train_cfg))]
        args += ["--val-shards", str(val_shards)] if val_shards else []
        args += ["--validation-md", *map(str, validation_md)] if validation_md else []
        args += ["--init-model", str(init_model)] if init_model else []
        launch(nproc, args + (["--threads", str(threads)] if threads else []),
               threads_per_process=None if threads is None else max(1, threads // nproc))  # fmt: skip
        return json.loads((out_dir / "train.json").read_text())
    if threads is not None:
        torch.set_num_threads(max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    ctx = setup(settings["gpus"])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        trainer = _Trainer(train_shards, val_shards, out_dir, settings, ctx, [Path(d) for d in validation_md],
                           Path(init_model) if init_model else None)
        return trainer.run(interrupt_at_step)
    finally:
        teardown(ctx)


def main(argv: list[str] | None = None) -> None:
    """Entry point for one (torchrun-launched) training process: ``python -m jamun.train``."""
    parser = argparse.ArgumentParser(prog="python -m jamun.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("train_shards", help="the train split's shard folder")
    parser.add_argument("out_dir", help="output folder, e.g. results/train")
    parser.add_argument("--val-shards", default=None, help="the validation split's shard folder")
    parser.add_argument("--settings", required=True, help="the train: config section as JSON")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the node, split between processes")
    parser.add_argument("--validation-md", nargs="+", default=[], metavar="DIR",
                        help="MD folders of the validation peptides for the sample checks (train.sample_check)")
    parser.add_argument("--init-model", default=None, help="start from this checkpoint's weights (warm start)")
    args = parser.parse_args(argv)
    train(Path(args.train_shards), Path(args.out_dir), json.loads(args.settings), threads=args.threads,
          val_shards=args.val_shards,
          validation_md=[Path(d) for d in args.validation_md], init_model=args.init_model)  # fmt: skip


if __name__ == "__main__":
    main()
