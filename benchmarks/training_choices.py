"""Model and training choices at equal CPU time, judged by sample quality (not by the loss).

Each variant is the demo ``train:`` section (config/config.yaml) with a few keys changed; it
trains on the real demo shards for ``--minutes`` wall minutes on ``--threads`` threads, with the
sample checks of the config (walk-jump on the validation peptides, jamun.training.sample_quality),
and reports the check the trainer selected: jump validity, chains that left the molecule, Rama
JSD, sample_error = (1 - valid) + jsd_rama, plus the final validation loss.

With ``--held-out GN ET FA`` the kept model is then judged where users meet it: the demo sampler
(the config's ``sample:`` section, chains from the built structure) on each held-out peptide,
scored against its reference MD (``results/md/<peptide>``) with the config's ``evaluate.bins_rama``
(valid jumps, L at every CA, Rama JSD, seconds per sample), and the drift JSD (chains started on
the reference MD frames, ``train.sample_check`` walk length).

    python benchmarks/training_choices.py --minutes 4 --threads 1 baseline endpoint_8
    python benchmarks/training_choices.py --minutes 12 --seed 1 --held-out GN ET FA demo energy
    python benchmarks/training_choices.py --list

Needs ``results/shards`` and ``results/md/<val peptide>`` from the demo workflow. Run two
variants in two processes at once on a 2-core machine (one thread each) to halve the wall time.
Prints one tab-separated row per variant (and appends them to --out as CSV).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from jamun.model import checkpoint
from jamun.roles import PeptideRoles
from jamun.sampling.sample import SampleSettings
from jamun.training import train
from jamun.training.sample_quality import load_validation_peptide, sample_quality

ROOT = Path(__file__).resolve().parents[1]

# name -> (train keys, model keys) changed from the demo config.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "demo": ({}, {}),
    "energy": ({}, {"output": "energy"}),
    "uvu": ({}, {"tensor_product": "uvu"}),
    "uvu_64x0e_16x1e": ({}, {"tensor_product": "uvu", "hidden_irreps": "64x0e + 16x1e"}),
    "energy_uvu": ({}, {"output": "energy", "tensor_product": "uvu"}),
    "sigma_range_0.01_0.04": ({"sigma_range_nm": [0.01, 0.04]}, {}),
    "baseline": ({}, {"endpoint_features": 0}),
    "endpoint_8": ({}, {"endpoint_features": 8}),
    "radial_16": ({}, {"endpoint_features": 8, "num_radial": 16}),
    "wide_64x0e_16x1e": ({}, {"endpoint_features": 8, "hidden_irreps": "64x0e + 16x1e"}),
    "deep_4_layers": ({}, {"endpoint_features": 8, "num_layers": 4}),
    "ema_0.999": ({"ema_decay": 0.999}, {"endpoint_features": 8}),
    "batch_64": ({"batch_size": 64}, {"endpoint_features": 8}),
    "batch_16": ({"batch_size": 16}, {"endpoint_features": 8}),
    "lr_5e-3": ({"lr": 0.005}, {"endpoint_features": 8}),
    "lr_1e-3": ({"lr": 0.001}, {"endpoint_features": 8}),
    "cosine": ({"lr_schedule": "cosine"}, {"endpoint_features": 8}),
    "bond_1": ({"bond_loss_weight": 1.0}, {"endpoint_features": 8}),
    "bond_3": ({"bond_loss_weight": 3.0}, {"endpoint_features": 8}),
    "bond_10": ({"bond_loss_weight": 10.0}, {"endpoint_features": 8}),
    "bond_3_cosine": ({"bond_loss_weight": 3.0, "lr_schedule": "cosine"}, {"endpoint_features": 8}),
    "bond_3_sigma_0.03": ({"bond_loss_weight": 3.0, "sigma_nm": 0.03}, {"endpoint_features": 8}),
    "bond_3_sigma_0.02": ({"bond_loss_weight": 3.0, "sigma_nm": 0.02}, {"endpoint_features": 8}),
    "bond_3_sigma_0.015": ({"bond_loss_weight": 3.0, "sigma_nm": 0.015}, {"endpoint_features": 8}),
    "bond_3_sigma_0.01": ({"bond_loss_weight": 3.0, "sigma_nm": 0.01}, {"endpoint_features": 8}),
    "sigma_0.01": ({"sigma_nm": 0.01}, {"endpoint_features": 8}),
    "bond_3_sigma_0.01_cosine": ({"bond_loss_weight": 3.0, "sigma_nm": 0.01, "lr_schedule": "cosine",
                                  "lr_warmup_steps": 100}, {"endpoint_features": 8}),
    "bond_3_sigma_0.01_ema_0.999": ({"bond_loss_weight": 3.0, "sigma_nm": 0.01, "ema_decay": 0.999},
                                    {"endpoint_features": 8}),
}
# The walks of the held-out check per variant (``sample:`` keys over the config's), default one:
# the config's. A model trained over a range of sigma is also walked at a smoother level with its
# jumps taken at the training sigma_nm (docs/design.md section 6, two levels).
HELD_OUT_WALKS: dict[str, dict[str, dict]] = {
    "sigma_range_0.01_0.04": {"one level": {}, "walk 0.02, jump 0.01": {"sigma_nm": 0.02, "jump_sigma_nm": 0.01}},
}
# A decaying schedule must end when the time does: its max_steps is this many steps per wall minute
# (measured: two 1-thread runs at once on the 2-core machine made ~210 steps/min at batch 32 on
# 2026-12-02 and 420-470 on the machine of 2026-12-03; pass --steps-per-minute for yours).
STEPS_PER_MINUTE = 210


def variant_config(base: dict, name: str, minutes: float, steps_per_minute: float = STEPS_PER_MINUTE) -> dict:
    """The demo train section with variant ``name`` applied, limited to ``minutes``."""
    train_keys, model_keys = VARIANTS[name]
    cfg = copy.deepcopy(base)
    cfg.update(train_keys)
    cfg["model"].update(model_keys)
    decays = cfg.get("lr_schedule", "constant") != "constant"
    cfg.update(max_minutes=minutes, max_steps=int(steps_per_minute * minutes) if decays else 10**7)
    return cfg


def held_out_quality(model_path: Path, config: dict, held_out: list[str], walk: dict) -> dict:
    """The kept model on the held-out peptides: the demo sampler (with ``walk``'s keys) jumps
    scored against each peptide's reference MD, and the drift JSD from its MD frames; means over
    the peptides."""
    model = checkpoint.load(model_path)
    peptides = [load_validation_peptide(ROOT / "results" / "md" / p) for p in held_out]
    check = config["train"]["sample_check"]
    scoring = {"bond_tolerance_nm": check.get("bond_tolerance_nm", 0.02), "bins": config["evaluate"]["bins_rama"]}
    sampler = {**config.get("sample", {}), **walk, "device": "cpu"}
    started = time.perf_counter()
    sampled = sample_quality(model, peptides, sampler, **scoring, start="built")
    seconds = time.perf_counter() - started
    per_sample = seconds / (len(peptides) * sampled_jumps(sampler))
    drift_walk = {**walk, "chains": sampler.get("chains", 32), "steps": check["steps"], "burn_in": check["burn_in"]}
    drift = sample_quality(model, peptides, drift_walk, **scoring, start="md")
    row = {f"{p}_{column}": sampled[p][column] for p in held_out for column in ("valid", "jsd_rama")}
    row.update({f"{p}_drift_jsd": drift[p]["jsd_rama"] for p in held_out})
    return {**row, "held_out_valid": sampled["mean"]["valid"],
            "held_out_l_chirality_ok": sampled["mean"]["l_chirality_ok"],
            "held_out_jsd_rama": sampled["mean"]["jsd_rama"], "held_out_drift_jsd": drift["mean"]["jsd_rama"],
            "ms_per_sample": 1000 * per_sample}  # fmt: skip


def sampled_jumps(sample_cfg: dict) -> int:
    """Jumps a walk of ``sample_cfg`` (schema defaults filled in) saves per peptide."""
    settings = SampleSettings.from_config(sample_cfg)
    return settings.chains * settings.samples_per_chain


def run_variant(name: str, config: dict, validation_md: list[Path], minutes: float, threads: int,
                keep: Path | None, steps_per_minute: float = STEPS_PER_MINUTE, seed: int = 0,
                held_out: list[str] = ()) -> list[dict]:
    """Train one variant (in ``keep``/name, else a temporary folder); its selected sample check,
    final losses and, with ``held_out`` peptides, :func:`held_out_quality` of each of its
    :data:`HELD_OUT_WALKS` (a row each)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = keep / f"{name}_seed{seed}" if keep else Path(tmp)
        cfg = variant_config(config["train"], name, minutes, steps_per_minute)
        cfg["seed"] = seed
        shards = ROOT / "results" / "shards"
        summary = train(shards / "train", out, cfg, threads=threads, val_shards=shards / "val",
                        validation_md=validation_md)
        torch.set_num_threads(threads)
        walks = HELD_OUT_WALKS.get(name, {"one level": {}})
        held = {label: held_out_quality(out / "model.ckpt", config, list(held_out), walk) if held_out else {}
                for label, walk in walks.items()}  # fmt: skip
    check = summary.get("selected_sample_check") or {}
    mean = check.get("mean", check)
    return [{
        "variant": name, "walk": label, "seed": seed, "parameters": summary["n_parameters"], "steps": summary["steps"],
        "graphs_per_s": summary["steps"] * summary["global_batch_size"] / summary["wall_seconds"],
        "selected_step": summary.get("selected_step"), "valid": mean.get("valid"),
        "l_chirality_ok": mean.get("l_chirality_ok"), "left_molecule": mean.get("left_molecule"),
        "jsd_rama": mean.get("jsd_rama"), "sample_error": mean.get("sample_error"),
        "final_val_loss": summary["final_val_loss"], "final_scaled_rmsd": summary["final_scaled_rmsd"],
        **quality,
    } for label, quality in held.items()]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help=f"any of {list(VARIANTS)}")
    parser.add_argument("--minutes", type=float, default=4.0, help="wall minutes of training per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "training_choices.csv")
    parser.add_argument("--keep", type=Path, default=None, help="keep each variant's outputs in KEEP/<variant>")
    parser.add_argument("--steps-per-minute", type=float, default=STEPS_PER_MINUTE,
                        help="training steps per wall minute, for the length of decaying LR schedules")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of every variant")
    parser.add_argument("--held-out", nargs="*", default=[], metavar="PEPTIDE",
                        help="also sample these peptides with the kept model and score them against their MD")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    args = parser.parse_args()
    if args.list or not args.variants:
        print(json.dumps(VARIANTS, indent=1))
        return
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    config = yaml.safe_load(args.config.read_text())
    roles = PeptideRoles.from_config(config["peptides"])
    validation_md = [ROOT / "results" / "md" / p for p in roles.val]
    for name in args.variants:
        rows = run_variant(name, config, validation_md, args.minutes, args.threads, args.keep,
                           args.steps_per_minute, args.seed, args.held_out)
        for row in rows:
            print("\t".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)


if __name__ == "__main__":
    main()
