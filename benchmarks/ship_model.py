"""Ship a trained checkpoint with the package: weights, checksum and a model card (issue 19).

The card is written from what the checkpoint and the evaluation recorded, never by hand: the
training summary inside the checkpoint (data, sigma, architecture, steps, hardware, minutes,
validation sample check) and the held-out metrics of ``jamun summarize`` (metrics.csv).

    python benchmarks/ship_model.py --checkpoint gpu/wide_s02.ckpt \\
        --metrics gpu/summary_wide_s02/metrics.csv --name jamun-2aa-h200 --default \\
        --data "200 x 0.5 ns implicit-solvent MD of the paper's training dipeptides (config/pretrain.yaml)"
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pandas as pd

from jamun.model import read_checkpoint
from jamun.model.pretrained import register_model

COLUMNS = {
    "peptide": "peptide", "valid": "valid jumps", "l_chirality_ok": "L at every CA",
    "chains_left_molecule": "chains left", "jamun.jsd_rama_mean": "JAMUN Rama JSD",
    "md_equal_time.jsd_rama_mean": "MD equal wall time", "replicate_floor.jsd_rama_mean": "replicate floor",
}  # fmt: skip


def markdown_table(table: pd.DataFrame) -> str:
    rows = [list(COLUMNS.values()), ["---"] * len(COLUMNS)]
    for _, row in table.iterrows():
        rows.append([row[c] if isinstance(row[c], str) else f"{row[c]:.3f}".rstrip("0").rstrip(".")
                     for c in COLUMNS])  # fmt: skip
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)


def warm_start(train: dict) -> str:
    """The earlier training a warm-started model continued, as a clause for the card."""
    before = train.get("initialised_from")
    if not before:
        return ""
    return (f", continuing {before['steps']:,} steps ({before['wall_seconds'] / 60:.1f} min on {before['device']}) "
            f"of the model with sha256 {before['sha256'][:12]}…")


def training_minutes(train: dict) -> float:
    """Wall minutes of this training and every run it continued."""
    minutes, record = 0.0, train
    while record:
        minutes += (record.get("wall_seconds") or 0.0) / 60
        record = record.get("initialised_from")
    return minutes


def model_card(name: str, checkpoint: dict, metrics: pd.DataFrame, data: str, date: str, produced_by: str) -> str:
    """The card's Markdown: provenance first, then held-out results."""
    train = checkpoint.get("train") or {}
    params = train.get("parameters", {})
    check = (train.get("selected_sample_check") or {}).get("mean", {})
    mean = metrics[["valid", "l_chirality_ok", "jamun.jsd_rama_mean", "md_equal_time.jsd_rama_mean",
                    "replicate_floor.jsd_rama_mean"]].mean()  # fmt: skip
    return f"""# {name}

JAMUN denoiser for capped peptides, shipped with jamun-pipeline; `jamun sample PEP --model {name}`
(or `--model pretrained` while it is the default).

| | |
|---|---|
| date | {date} |
| training data | {data}; {train.get('train_frames', '?'):,} frames of {len(train.get('train_peptides', []))} peptides; validation: {', '.join(train.get('val_peptides', []))} |
| noise level σ | {train.get('sigma_nm')} nm |
| architecture | {checkpoint['model_config'].get('hidden_irreps')}, {checkpoint['model_config'].get('num_layers')} layers, r_cut {checkpoint['model_config'].get('r_cut_nm')} nm, {train.get('n_parameters', 0):,} parameters; C = {checkpoint['C']:.4f} nm² |
| training | {train.get('steps', 0):,} steps of batch {train.get('global_batch_size')}, lr {params.get('lr')}, EMA {params.get('ema_decay')}, bond term {params.get('bond_loss_weight')}; stopped by {train.get('stopped_by')} |
| hardware | {train.get('device')}, {train.get('world_size')} process(es), process group {train.get('process_group')} |
| minutes | {train.get('wall_seconds', 0) / 60:.1f} of training{warm_start(train)} |
| selected state | step {train.get('selected_step')} by {train.get('selected_by')} (validation sample check: valid {check.get('valid', float('nan')):.3f}, Rama JSD {check.get('jsd_rama', float('nan')):.3f}) |
| produced by | {produced_by} |

## Held-out test peptides

32 chains x 2000 walk-jump steps from the built structure (config/pretrain.yaml `sample`), all
peptides in one batch on the training hardware ({metrics['timing.sampler_wall_seconds'].mean():.1f} s of
sampler wall time per peptide: the batch's time shared equally), against 3 ns reference MD; JSD in
nats (50 x 50 bins); MD of equal wall time (as many frames as that time buys on one CPU core) and
the replicate floor from an independent replicate run (jamun/analysis/evaluate.py).

{markdown_table(metrics)}

Mean: valid {mean['valid']:.3f}, L at every CA {mean['l_chirality_ok']:.3f}, JAMUN Rama JSD
{mean['jamun.jsd_rama_mean']:.3f}, MD of equal wall time {mean['md_equal_time.jsd_rama_mean']:.3f},
replicate floor {mean['replicate_floor.jsd_rama_mean']:.3f}.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.csv of jamun summarize (held-out)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--data", required=True, help="one line: what the training data was")
    parser.add_argument("--default", action="store_true", help="make it the model `pretrained` names")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    parser.add_argument("--produced-by", required=True, help="one line: the commands and configs that trained it")
    args = parser.parse_args(argv)
    checkpoint = read_checkpoint(args.checkpoint)
    metrics = pd.read_csv(args.metrics)
    metrics = metrics[metrics["role"] == "test"]
    card = model_card(args.name, checkpoint, metrics, args.data, args.date, args.produced_by)
    train = checkpoint.get("train") or {}
    summary = (f"sigma {train.get('sigma_nm')} nm, {train.get('n_parameters', 0) / 1e6:.2f}M parameters, "
               f"{training_minutes(train):.1f} min on {train.get('device')}, "
               f"held-out mean Rama JSD {metrics['jamun.jsd_rama_mean'].mean():.3f}")  # fmt: skip
    path = register_model(args.checkpoint, args.name, card, summary, default=args.default)
    print(f"shipped {path}\n{summary}")


if __name__ == "__main__":
    main()
