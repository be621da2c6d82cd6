"""The training loop of one process (docs/design.md §5.5, §8); rank 0 writes checkpoints and outputs.

A step takes this rank's slice of the global batch and its rows of the step's noise
(:mod:`jamun.training.noise`), computes the loss through DDP (:mod:`jamun.training.loss`,
:mod:`jamun.training.distributed`), clips the gradient, steps Adam at the step's learning rate
(:mod:`jamun.training.schedule`) and updates the EMA. Every ``val_every`` steps a metrics row is
logged (:mod:`jamun.training.report`, :mod:`jamun.training.validation`), every
``sample_check.every`` steps the evaluated model is checked (:mod:`jamun.training.selection`), and
every ``checkpoint_every`` steps the whole state goes to ``OUT/.work`` (:mod:`jamun.training.state`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from jamun.data.dataset import EpochOrder, ShardSplit
from jamun.data.shards import MANIFEST, STATS, sha256_file
from jamun.model import Denoiser, model_config, read_checkpoint, save
from jamun.model.checkpoint import load_weights
from jamun.model.pretrained import file_sha256
from jamun.training.distributed import Context, all_reduce_sum, data_parallel
from jamun.training.loss import DenoisingLoss
from jamun.training.noise import TRAIN_STREAM, rank_noise, rank_noise_and_sigma
from jamun.training.report import MetricsLog, write_reports
from jamun.training.schedule import learning_rate
from jamun.training.selection import CheckpointSelection
from jamun.training.state import WORK_DIR, WorkFolder, resume_key, rng_state, set_rng_state
from jamun.training.validation import validation_loss

__all__ = ["Trainer", "warm_start", "exponential_average"]


def warm_start(model: Denoiser, init_model: Path) -> dict:
    """Load the weights of a saved model of the same architecture into ``model`` (the optimizer,
    schedule and step count start afresh); returns its provenance for train.json."""
    checkpoint = read_checkpoint(init_model)
    if model_config(checkpoint["model_config"]) != dict(model.config):  # older checkpoints lack sigma_range_nm
        raise ValueError(f"--init-model {init_model} is a {checkpoint['model_config']} model; train.model and "
                         f"sigma_nm ask for {dict(model.config)}")
    load_weights(model, checkpoint["state_dict"], init_model)
    before = checkpoint.get("train") or {}
    return {"file": str(init_model), "sha256": file_sha256(init_model), "steps": before.get("steps"),
            "wall_seconds": before.get("wall_seconds"), "device": before.get("device"),
            "initialised_from": before.get("initialised_from")}  # fmt: skip


def exponential_average(model: Denoiser, decay: float) -> AveragedModel:
    """EMA of ``model``'s parameters (``torch.optim.swa_utils``), starting at its current weights.

    After optimizer step t (1, 2, ...) ``update_parameters`` lerps every average towards the
    parameter by 1 - d_t with the warmed-up decay d_t = min(decay, (1 + t) / (10 + t)) (the
    ``num_updates`` rule of TensorFlow's ExponentialMovingAverage), so early averages follow the
    training instead of holding on to the random initial weights for ~1 / (1 - decay) steps.
    Its ``module`` is a :class:`Denoiser` whose state_dict has the model's keys; its ``n_averaged``
    is t + 1 after step t (the initial copy counts)."""

    def lerp_towards(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        t = int(n_averaged)
        weight = 1.0 - min(decay, (1 + t) / (10 + t))
        for average, parameter in zip(averaged, current):
            average.lerp_(parameter, weight)

    ema = AveragedModel(model, multi_avg_fn=lerp_towards)
    ema.update_parameters(model)  # the first update copies: the average starts at the initial weights
    return ema


class Trainer:
    """One process's training run, resumed from ``out_dir``/.work/last.pt when that is this run's.

    Parameters are those of :func:`jamun.training.train` after their checks; ``ctx`` says where
    this process trains.
    """

    def __init__(
        self, train_shards: Path, val_shards: Path | None, out_dir: Path, settings: dict, ctx: Context,
        validation_md: Sequence[Path], init_model: Path | None = None,
    ) -> None:  # fmt: skip
        self.s, self.ctx, self.out_dir = settings, ctx, out_dir
        check = settings["sample_check"]
        # Known on every rank (a check step also logs a row, and validation is collective); only
        # rank 0 loads the peptides and walks.
        self.check_every = check["every"] if validation_md else None
        if check["every"] is not None and not validation_md and ctx.is_main:
            print("train.sample_check.every is set but no validation MD folders were given: no sample checks, "
                  "model.ckpt will be the last state", file=sys.stderr)  # fmt: skip
        walks = self.check_every is not None and ctx.is_main
        self.selection = CheckpointSelection(validation_md if walks else [], check, settings["seed"])
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
        self.initialised_from = warm_start(self.model, init_model) if init_model is not None else None
        # Wrapping copies rank 0's weights to every rank.
        self.objective = data_parallel(DenoisingLoss(self.model, settings["bond_loss_weight"]), ctx)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings["lr"])
        self.ema = exponential_average(self.model, settings["ema_decay"]) if settings["ema_decay"] else None
        self.evaluated = self.model if self.ema is None else self.ema.module  # validated, checked, saved
        self.val_objective = DenoisingLoss(self.evaluated)
        self.metrics = MetricsLog()
        self.step, self.wall_before, self.resumed_from = 0, 0.0, []
        key = resume_key(
            settings, ctx.world_size, sha256_file(train_shards / MANIFEST),
            [Path(d).name for d in validation_md] if self.check_every is not None else [],
            self.initialised_from and self.initialised_from["sha256"],
        )  # fmt: skip
        self.work = WorkFolder(out_dir / WORK_DIR, key)
        self._restore()

    # ---- checkpoints -------------------------------------------------------------------
    def _restore(self) -> None:
        """Continue from the work checkpoint if this run wrote it."""
        state = self.work.load(remove_foreign=self.ctx.is_main)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.n_averaged.fill_(state["step"] + 1)  # the warm-up of the decay goes on from there
        set_rng_state(state["rng"])
        self.metrics.load_state_dict(state)
        self.selection.load_state_dict(state)
        self.step, self.wall_before = state["step"], state["wall_s"]
        self.resumed_from = state["resumed_from"] + [self.step]

    def _checkpoint(self, wall: float, numbered: bool) -> None:
        """Write the whole state to the work folder (rank 0)."""
        if not self.ctx.is_main:
            return
        epoch, k = divmod(self.step, self.steps_per_epoch)
        state = {
            "step": self.step, "epoch": epoch, "position": k * self.global_batch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": None if self.ema is None else self.ema.module.state_dict(), "rng": rng_state(), "wall_s": wall,
            "resumed_from": self.resumed_from, **self.metrics.state_dict(), **self.selection.state_dict(),
        }  # fmt: skip
        self.work.save(state, self.step, numbered)

    # ---- steps ---------------------------------------------------------------------------
    def _train_step(self, order: EpochOrder, over_time: bool) -> tuple[float, bool]:
        """One optimizer step; returns the loss over the global batch and whether any rank is
        over its time limit (ranks agree on both through one all-reduce)."""
        t0 = time.perf_counter()
        epoch, k = divmod(self.step, self.steps_per_epoch)
        start = k * self.global_batch
        frames = order.batch(epoch, start, start + self.global_batch, self.ctx.rank, self.ctx.world_size)
        graph, x = frames.graph.to(self.ctx.device), frames.positions.to(self.ctx.device)
        sigma = None  # the model's sigma_nm; with train.sigma_range_nm one per graph, fixed by (seed, step)
        if self.s["sigma_range_nm"] is None:
            eta = rank_noise(self.s["seed"], TRAIN_STREAM, self.step, frames, self.ctx.device)
        else:
            eta, sigma = rank_noise_and_sigma(self.s["seed"], TRAIN_STREAM, self.step, frames,
                                              self.s["sigma_range_nm"], self.ctx.device)
        t_data = time.perf_counter() - t0
        self.objective.train()
        self.optimizer.zero_grad(set_to_none=True)
        lr = learning_rate(self.step, self.s["lr"], self.s["lr_schedule"], self.s["lr_warmup_steps"],
                           self.s["max_steps"])  # fmt: skip
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.objective(x, eta, graph) if sigma is None else self.objective(x, eta, graph, sigma)
        loss.backward()  # DDP averages the gradients over ranks during this call
        flags = torch.tensor([0.0, float(over_time)], dtype=torch.float64, device=loss.device)
        flags[0] = loss.detach()
        all_reduce_sum(flags, self.ctx)
        mean_loss = float(flags[0]) / self.ctx.world_size
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s["grad_clip"] or math.inf))
        if not (math.isfinite(mean_loss) and math.isfinite(norm)):
            kept = (f"the last good checkpoint ({self.work.last}) resumes it" if self.work.last.is_file()
                    else "no checkpoint was written yet")
            raise FloatingPointError(
                f"training loss {mean_loss} (gradient norm {norm}) at step {self.step + 1} is not finite; "
                f"stopped, {kept}; a smaller train.lr (now {self.s['lr']}) or a train.grad_clip "
                f"(now {self.s['grad_clip']}) keeps training stable"
            )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        self.metrics.add_step(mean_loss, self.global_batch, t_data, time.perf_counter() - t0)
        return mean_loss, float(flags[1]) > 0

    def _log(self, wall: float, val_order: EpochOrder | None) -> None:
        """Append a metrics row with the validation loss of the evaluated model (collective)."""
        val_loss, scaled_rmsd = math.nan, math.nan
        if val_order is not None:
            val_loss, scaled_rmsd = validation_loss(self.val_objective, val_order, self.s["val_batches"],
                                                    self.global_batch, self.s["seed"], self.ctx)  # fmt: skip
        self.metrics.log(self.step, self.step / self.steps_per_epoch, val_loss, scaled_rmsd, wall)

    def _sample_check(self) -> None:
        """Check the evaluated model (rank 0 only; the other ranks go on and wait at the next
        collective) and put the mean scores into the last metrics row."""
        if not self.ctx.is_main:
            return
        mean, kept = self.selection.check(self.evaluated, self.step)
        self.metrics.history[-1].update(mean)
        line = f"step {self.step}: " + ", ".join(f"{k} {mean[k]:.2f}" for k in ("valid", "jsd_rama", "left_molecule"))
        tqdm.write(line + (" (best)" if kept else ""), file=sys.stderr)

    # ---- the run -------------------------------------------------------------------------
    def run(self, interrupt_at_step: int | None) -> dict:
        """Train to ``max_steps`` or ``max_minutes`` and write the outputs; returns the summary
        (or ``{"interrupted_at_step": k}``, leaving only the work checkpoint, as a killed run)."""
        s, started = self.s, time.perf_counter()
        wall = lambda: self.wall_before + time.perf_counter() - started  # noqa: E731
        order = EpochOrder(self.train_data, s["seed"])
        val_order = EpochOrder(self.val_data, s["seed"]) if self.val_data else None
        if not self.metrics.history:
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
            check_due = self.check_every is not None and self.step % self.check_every == 0
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
        if self.metrics.history[-1]["step"] != self.step:
            self._log(wall(), val_order)
        if self.check_every is not None and self.selection.checked_at(self.step) is None:
            self._sample_check()
        self._checkpoint(wall(), numbered=False)  # outputs below can be rewritten from it if killed
        return self._finish(stopped_by, wall())

    def _summary(self, stopped_by: str, wall: float, selected: int) -> dict:
        """The content of train.json."""
        from jamun.provenance import package_versions

        last, best = self.metrics.history[-1], self.selection.best
        return {
            "parameters": self.s, "model_config": self.evaluated.config,
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
            "selected_step": selected, "selected_by": "sample_error" if best else "last",
            "selected_sample_check": self.selection.checked_at(selected),
            "sample_checks": self.selection.checks,
        }  # fmt: skip

    def _finish(self, stopped_by: str, wall: float) -> dict:
        """Keep the selected state (rank 0 with sample checks: the best checked one, else the
        last), write model.ckpt and the reports, and remove the work folder."""
        best = self.selection.best
        if best is not None:
            self.evaluated.load_state_dict(best["state"])
        summary = self._summary(stopped_by, wall, best["step"] if best else self.step)
        if self.ctx.is_main:
            write_reports(self.metrics.history, summary, self.out_dir)
            save(self.evaluated, self.out_dir / "model.ckpt", train=summary)
            self.work.remove()
        return summary
