"""``jamun`` command line: one subcommand per workflow stage (docs/design.md §1).

Every subcommand reads one section of the workflow settings: from a config file (``--config``),
or as JSON (``--settings``, what the Snakemake rules pass), or neither; either way the section is
validated against ``workflow/schemas/config.schema.yaml`` and completed with its defaults
(:mod:`jamun.schema`), so a misspelled key stops the command before any work. Every file a
command reads or writes is named on its command line; nothing assumes a ``results/`` folder.
Heavy imports (openmm, torch) happen inside the subcommands, so ``jamun --help`` is instant, MD
jobs never import torch and evaluation imports neither.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

# Spinning OpenMP threads make 2 torch threads 6-9x slower than 1 on a shared 2-core machine
# (measured in training); passive waiting costs nothing measurable. Must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Progress bars in rule logs (stderr redirected to a file) update every 30 s, not every step.
if not sys.stderr.isatty():
    os.environ.setdefault("TQDM_MININTERVAL", "30")


def load_section(args: argparse.Namespace, section: str) -> dict:
    """A subcommand's settings section, validated and completed with the schema's defaults.

    ``--settings`` JSON wins over ``--config``; with neither, the section is all defaults.
    """
    from jamun.schema import section_settings

    if args.settings is not None:
        try:
            raw = json.loads(args.settings)
        except json.JSONDecodeError as error:
            raise ValueError(f"--settings is not valid JSON ({error}): {args.settings!r}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"--settings must be a JSON object, got {args.settings!r}")
        return section_settings(section, raw, "--settings")
    if args.config is None:
        return section_settings(section, {}, "the schema defaults")
    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found; pass an existing --config FILE or --settings JSON")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"config file {path} must hold a mapping of sections, got {type(config).__name__}")
    return section_settings(section, config.get(section, {}), str(path))


def use_headless_figures() -> None:
    """Draw figures without a display; only commands that write figures choose the backend.

    MPLBACKEND reaches the training processes that torchrun starts, too.
    """
    import matplotlib

    os.environ["MPLBACKEND"] = "Agg"
    matplotlib.use("Agg")


def cmd_build(args: argparse.Namespace) -> None:
    from jamun.peptides import build_peptide
    from jamun.sequence import validate_sequence

    sequence = validate_sequence(args.peptide)
    build_peptide(sequence, Path(args.output) / "system.pdb")


def cmd_simulate(args: argparse.Namespace) -> None:
    from jamun.md import MDSettings, simulate
    from jamun.sequence import validate_sequence

    validate_sequence(args.peptide)
    md_cfg = load_section(args, "md")
    if args.protocol is not None:
        md_cfg = {**md_cfg, "protocol": args.protocol}
    settings = MDSettings.from_config(md_cfg)
    length_ns = args.ns if args.ns is not None else md_cfg["length_ns"][args.role]
    system_pdb = Path(args.system)
    if not system_pdb.is_file():
        raise FileNotFoundError(f"{system_pdb} not found: run `jamun build {args.peptide} -o FOLDER` first")
    seed = md_cfg["seed"] + (1 if args.role == "replicate" else 0)
    simulate(system_pdb, Path(args.output), length_ns=length_ns, seed=seed, settings=settings,
             threads=args.threads)


def cmd_shard(args: argparse.Namespace) -> None:
    from jamun.roles import read_peptide_list
    from jamun.data.shards import write_shards

    data_cfg = load_section(args, "data")
    peptides = read_peptide_list(args.peptides)
    if not len(peptides) == len(args.traj) == len(args.topology):
        raise ValueError(f"{args.peptides} lists {len(peptides)} peptides but {len(args.traj)} --traj and "
                         f"{len(args.topology)} --topology files were given; pass one of each per peptide, in list order")
    write_shards(
        args.split,
        [(p, Path(t), Path(top)) for p, t, top in zip(peptides, args.traj, args.topology)],
        Path(args.output),
        frames_per_shard=data_cfg["frames_per_shard"],
        stride=data_cfg["stride"],
        seed=data_cfg["seed"],
    )


def cmd_train(args: argparse.Namespace) -> None:
    from jamun.training import train

    use_headless_figures()
    train_cfg = load_section(args, "train")
    if args.gpus is not None:
        train_cfg = {**train_cfg, "gpus": args.gpus}
    train(Path(args.train_shards), Path(args.output), train_cfg, threads=args.threads,
          val_shards=Path(args.val_shards) if args.val_shards else None,
          validation_md=[Path(d) for d in args.validation_md],
          init_model=Path(args.init_model) if args.init_model else None)


def cmd_sample(args: argparse.Namespace) -> None:
    from jamun.sequence import validate_sequence
    from jamun.sampling import SampleTarget, sample_peptides

    sequences = [validate_sequence(p) for p in args.peptide]
    if len(args.system) != len(sequences):
        raise ValueError(f"--system takes one built structure per peptide: {len(sequences)} peptides "
                         f"({' '.join(sequences)}), {len(args.system)} files")
    if len(sequences) > 1 and args.init:
        raise ValueError(f"--init names one peptide's trajectory; pass one peptide with it, not {len(sequences)}")
    sample_cfg = load_section(args, "sample")
    overrides = {"chains": args.chains, "steps": args.steps, "seed": args.seed, "device": args.device}
    sample_cfg = {**sample_cfg, **{k: v for k, v in overrides.items() if v is not None}}
    output = Path(args.output)
    targets = [
        SampleTarget(sequence, Path(system), output if len(sequences) == 1 else output / sequence,
                     Path(args.init) if args.init else None)
        for sequence, system in zip(sequences, args.system)
    ]
    sample_peptides(targets, args.model, **sample_cfg)


def cmd_models(args: argparse.Namespace) -> None:
    from jamun.model import pretrained

    registry = pretrained.shipped_models(pretrained.PRETRAINED_DIR)
    if not registry["models"]:
        print("no shipped models in this installation")
    for name, entry in registry["models"].items():
        marker = f" ({pretrained.DEFAULT_NAME})" if name == registry["default"] else ""
        print(f"{name}{marker}: {entry['summary']} [card: {pretrained.PRETRAINED_DIR / entry['card']}]")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from jamun.analysis import EnsembleFiles, evaluate_peptide
    from jamun.sequence import validate_sequence

    use_headless_figures()
    reference, reference_record, topology = map(Path, args.reference)
    replicate, replicate_record = map(Path, args.replicate)
    samples, samples_record, samples_topology = map(Path, args.samples)
    files = EnsembleFiles(reference, reference_record, topology, replicate, replicate_record,
                          samples, samples_record, samples_topology)
    evaluate_peptide(validate_sequence(args.peptide), files, Path(args.output),
                     load_section(args, "evaluate"), role=args.role)


def cmd_summarize(args: argparse.Namespace) -> None:
    from jamun.analysis import summarize

    use_headless_figures()
    summarize([Path(m) for m in args.metrics], Path(args.output))


def cmd_compare(args: argparse.Namespace) -> None:
    from jamun.analysis.compare import ModelSource, compare
    from jamun.sequence import validate_sequence

    use_headless_figures()
    peptides = [validate_sequence(p) for p in args.peptides]
    models = []
    for values in args.model:
        if len(values) not in (2, 3):
            raise ValueError(f"--model takes CHECKPOINT EVALUATION [NAME], got {values}")
        models.append(ModelSource(values[0], Path(values[1]), values[2] if len(values) == 3 else None))
    compare(models, peptides, Path(args.output))


def cmd_provenance(args: argparse.Namespace) -> None:
    from jamun.provenance import write_provenance

    if args.settings is not None:
        config = json.loads(args.settings)
    elif args.config is not None:
        config = yaml.safe_load(Path(args.config).read_text())
    else:
        raise ValueError("provenance records a whole config: pass --config FILE or --settings JSON")
    write_provenance(config, Path(args.output))


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="workflow config file whose section this command reads (default: the schema's defaults)")
    parser.add_argument("--settings", default=None,
                        help="this stage's config section as JSON (instead of --config; missing keys take the defaults)")


def build_parser() -> argparse.ArgumentParser:
    """The ``jamun`` argument parser with one subcommand per stage."""
    parser = argparse.ArgumentParser(prog="jamun", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an expected failure too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("build", cmd_build, "build a capped, minimized peptide ACE-...-NME -> OUTPUT/system.pdb")
    p.add_argument("peptide", help="one-letter sequence, 1-8 residues, e.g. GN")
    p.add_argument("-o", "--output", required=True, help="peptide folder, e.g. results/md/GN")

    p = add("simulate", cmd_simulate, "run OpenMM MD of a built peptide (resumes from OUTPUT/.work)")
    p.add_argument("peptide")
    p.add_argument("--system", required=True, help="the built structure, e.g. results/md/GN/system.pdb")
    p.add_argument("-o", "--output", required=True,
                   help="folder for traj.xtc, topology.pdb, md.json, e.g. results/md/GN or results/md/GN/replicate")
    p.add_argument("--role", choices=["train", "test", "replicate"], default="test",
                   help="sets the length (md.length_ns) and, for replicate, the seed md.seed + 1")
    p.add_argument("--ns", type=float, default=None, help="production length in ns (overrides the role's)")
    p.add_argument("--protocol", choices=["implicit", "explicit"], default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of OpenMM's CPU platform (default: all cores); the workflow passes the rule's")
    _add_config_options(p)

    p = add("shard", cmd_shard, "write heavy-atom frames of a split's trajectories into shuffled shards")
    p.add_argument("split", choices=["train", "val"])
    p.add_argument("--peptides", required=True, help="peptide list file of this split")
    p.add_argument("--traj", nargs="+", required=True, help="each listed peptide's trajectory, in list order")
    p.add_argument("--topology", nargs="+", required=True, help="each listed peptide's topology.pdb, in list order")
    p.add_argument("-o", "--output", required=True, help="shard folder, e.g. results/shards/train")
    _add_config_options(p)

    p = add("train", cmd_train, "train the denoiser on shards (resumes from OUTPUT/.work)")
    p.add_argument("--train-shards", required=True, help="the train split's shard folder, e.g. results/shards/train")
    p.add_argument("--val-shards", default=None,
                   help="the validation split's shard folder; without it no validation loss is computed")
    p.add_argument("-o", "--output", required=True, help="e.g. results/train")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, split between processes")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs (overrides train.gpus); above 1, one DDP process per GPU is started with torchrun")
    p.add_argument("--validation-md", nargs="+", default=[], metavar="DIR",
                   help="MD folders (system.pdb, traj.xtc, topology.pdb) of the validation peptides; with "
                        "train.sample_check.every set, short walk-jump runs on them choose model.ckpt")
    p.add_argument("--init-model", default=None, metavar="CKPT",
                   help="start from the weights of this checkpoint (same architecture; optimizer and steps start afresh)")
    _add_config_options(p)

    p = add("sample", cmd_sample, "walk-jump sample peptides from their sequences alone (several: one batch)")
    p.add_argument("peptide", nargs="+", help="one or more one-letter sequences; several share one batch of chains")
    p.add_argument("--model", required=True,
                   help="checkpoint file, or a shipped model name ('pretrained' = the default shipped model; "
                        "`jamun models` lists them)")
    p.add_argument("-o", "--output", required=True,
                   help="the peptide's folder, e.g. results/samples/GN; with several peptides the folder that "
                        "holds one subfolder per peptide")
    p.add_argument("--system", nargs="+", required=True,
                   help="each peptide's built structure (`jamun build`), in the order of the peptides")
    p.add_argument("--init", default=None, help="start chains from frames of this trajectory instead")
    p.add_argument("--chains", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="torch device, overrides sample.device (auto, cpu, cuda, cuda:N)")
    _add_config_options(p)

    add("models", cmd_models, "list the models shipped with this installation (for sample --model)")

    p = add("evaluate", cmd_evaluate, "compare a peptide's samples with its reference MD")
    p.add_argument("peptide")
    p.add_argument("-o", "--output", required=True, help="e.g. results/evaluate/GN")
    p.add_argument("--reference", nargs=3, required=True, metavar=("TRAJ", "MD_JSON", "TOPOLOGY"),
                   help="the reference MD: trajectory, its md.json and all-atom topology.pdb")
    p.add_argument("--replicate", nargs=2, required=True, metavar=("TRAJ", "MD_JSON"),
                   help="the independent replicate MD on the same topology: trajectory and its md.json")
    p.add_argument("--samples", nargs=3, required=True, metavar=("TRAJ", "SAMPLE_JSON", "TOPOLOGY"),
                   help="the walk-jump samples: samples.xtc, sample.json and their heavy-atom topology.pdb")
    p.add_argument("--role", choices=["train", "test"], default="test",
                   help="the peptide's role, recorded in metrics.json: train (or val) list, or held out (test)")
    _add_config_options(p)

    p = add("summarize", cmd_summarize, "gather per-peptide metrics into one table and figure")
    p.add_argument("metrics", nargs="+", help="metrics.json files")
    p.add_argument("-o", "--output", required=True, help="e.g. results/summary")

    p = add("compare", cmd_compare, "compare models on the same peptides -> OUTPUT/models.{csv,png}")
    p.add_argument("--model", action="append", nargs="+", required=True, metavar="ARG",
                   help="CHECKPOINT EVALUATION [NAME], once per model: a checkpoint file or shipped model name "
                        "(its training record labels the model), the folder with <peptide>/metrics.json of its "
                        "samples, and the name shown (default: shipped model '<name>' or model <file>)")
    p.add_argument("--peptides", nargs="+", required=True, help="peptides evaluated with every model")
    p.add_argument("-o", "--output", required=True, help="e.g. results/summary")

    p = add("provenance", cmd_provenance, "write the config and package versions for the report")
    p.add_argument("-o", "--output", required=True, help="e.g. results/summary/provenance.txt")
    _add_config_options(p)
    return parser


# Failures a user can act on (bad input, a corrupt or missing file, a run that went non-finite):
# one line on stderr and exit status 2; anything else is a bug and keeps its traceback.
EXPECTED_FAILURES = (ValueError, FileNotFoundError, FloatingPointError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; expected failures are printed as one line (``--debug``: with the traceback)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except EXPECTED_FAILURES as error:
        if args.debug:
            raise
        message = " ".join(str(error).split())  # one line, whatever the exception's text held
        print(f"jamun {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
