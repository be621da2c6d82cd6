"""One prepared GPU session (issue 19): benchmarks, test-peptide MD, training variants, sampling and
evaluation in a single bounded run, driven by the project's own ``jamun`` commands.

Two steps:

``payload``  (here, after the pretraining MD and shards exist) copies what the GPU machine needs
             into one folder: ``shards/{train,val}`` and the validation peptides' MD
             (``md/<pep>/{system.pdb, traj.xtc, topology.pdb}``) for the sample checks.
``run``      (on the GPU machine, or on CPU as a rehearsal) does, against one deadline:

1. reference and replicate MD of the config's test peptides on the spare CPU cores (``jamun build``,
   ``jamun simulate``), in the background;
2. every training variant of ``--variants`` at once (``torchrun`` with one process each, so that the
   CUDA path starts NCCL as multi-GPU jobs do), each for the minutes that remain;
3. ``jamun sample`` of all test peptides in one batch per trained model;
4. the throughput benchmarks (``gpu_denoiser.py``, ``gpu_sampler.py``; CUDA only) on the GPU while
   ``jamun evaluate`` of every (variant, peptide) and ``jamun summarize`` per variant use the CPUs.

What it returns fits the device tool's limits (at most 8 files, 16 MiB each): ``<variant>.ckpt``
per variant, ``results.tar.gz`` (train.json, metrics.csv, loss.png, sample.json, evaluation
outputs without samples, benchmark tables, logs) and ``test_md_<k>.tar`` (the test peptides' MD,
split to stay under the size limit). Models are written to the output folder as soon as training
ends, so a run stopped later still returns them.

    python benchmarks/gpu_run.py payload --results results -o .gpu_payload
    python benchmarks/gpu_run.py run --payload .gpu_payload --out OUT --deadline-minutes 9
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
VAL_MD_FILES = ("system.pdb", "traj.xtc", "topology.pdb")
HEADLINE = ("peptide", "valid", "l_chirality_ok", "chains_left_molecule", "jamun.jsd_rama_mean",
            "md_equal_time.jsd_rama_mean", "replicate_floor.jsd_rama_mean")


def log(message: str) -> None:
    print(f"[gpu_run {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peptide_list(config: dict, split: str) -> list[str]:
    return (ROOT / config["peptides"][split]).read_text().split()


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s keys replaced, recursing into nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def make_payload(args: argparse.Namespace) -> None:
    """Copy the shards and the validation peptides' MD under ``args.output``."""
    config = yaml.safe_load(args.config.read_text())
    out = args.output
    shutil.rmtree(out, ignore_errors=True)
    for split in ("train", "val"):
        if (args.results / "shards" / split).is_dir():
            shutil.copytree(args.results / "shards" / split, out / "shards" / split)
    for peptide in peptide_list(config, "val"):
        for name in VAL_MD_FILES:
            (out / "md" / peptide).mkdir(parents=True, exist_ok=True)
            shutil.copy2(args.results / "md" / peptide / name, out / "md" / peptide / name)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"payload {out}: {size / 2**20:.1f} MiB")


class Run:
    """State of one ``run``: its settings, folders and deadline."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.started = args, time.monotonic()
        self.deadline = self.started + 60 * args.deadline_minutes
        self.config = yaml.safe_load(args.config.read_text())
        self.variants: dict[str, dict] = yaml.safe_load(args.variants.read_text())
        self.work, self.out = args.work, args.out
        self.work.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.test_peptides = args.peptides or peptide_list(self.config, "test")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def minutes_left(self) -> float:
        return (self.deadline - time.monotonic()) / 60

    def jamun(self, *argv: str, log_name: str, background: bool = False):
        """Run ``python -m jamun.cli ARGV`` with its output in ``work/logs/LOG_NAME``."""
        (self.work / "logs").mkdir(exist_ok=True)
        handle = (self.work / "logs" / log_name).open("w")
        command = [PYTHON, "-m", "jamun.cli", *argv]
        if background:
            return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT).returncode

    # ---- benchmarks --------------------------------------------------------------------------
    def benchmarks(self) -> None:
        bench = self.work / "bench"
        bench.mkdir(exist_ok=True)
        runs = [
            ("gpu_denoiser", [str(ROOT / "benchmarks/gpu_denoiser.py"), "--batch-sizes", "256", "1024", "4096",
                              "--out", str(bench / "denoiser.tsv")]),
            ("gpu_sampler_tf32", [str(ROOT / "benchmarks/gpu_sampler.py"), "--chains", "256", "1024", "4096",
                                  "--seconds", "3", "--tf32", "--csv", str(bench / "sampler_tf32.csv")]),
            ("gpu_sampler_fp32", [str(ROOT / "benchmarks/gpu_sampler.py"), "--chains", "1024", "4096",
                                  "--seconds", "3", "--csv", str(bench / "sampler_fp32.csv")]),
        ]  # fmt: skip
        for name, argv in runs:
            with (bench / f"{name}.txt").open("w") as handle:
                try:
                    code = subprocess.run([PYTHON, *argv], stdout=handle, stderr=subprocess.STDOUT, env=self.env,
                                          cwd=ROOT, timeout=self.args.bench_seconds).returncode
                except subprocess.TimeoutExpired:
                    code = "timeout"
            log(f"benchmark {name}: exit {code}")

    # ---- test MD -----------------------------------------------------------------------------
    def start_md(self) -> list[concurrent.futures.Future]:
        """Build and simulate (test + replicate) every test peptide with ``--md-workers`` processes;
        with ``--test-md`` (the MD of an earlier run) copy that instead."""
        if self.args.test_md is not None:
            shutil.copytree(self.args.test_md, self.work / "md", dirs_exist_ok=True)
            return []
        md_settings = json.dumps(self.config["md"])
        md_root = self.work / "md"

        def one(peptide: str, role: str) -> str:
            folder = md_root / peptide
            if role == "test" and self.jamun("build", peptide, "-o", str(folder), log_name=f"build_{peptide}.log"):
                return f"{peptide}: build failed"
            while role == "replicate" and not (folder / "system.pdb").is_file():
                time.sleep(1)  # the test job builds it
            output = folder / "replicate" if role == "replicate" else folder
            code = self.jamun("simulate", peptide, "--system", str(folder / "system.pdb"), "-o", str(output),
                              "--role", role, "--threads", "1", "--settings", md_settings,
                              log_name=f"simulate_{peptide}_{role}.log")
            return f"{peptide} {role}: exit {code}"

        pool = concurrent.futures.ThreadPoolExecutor(self.args.md_workers)
        jobs = [pool.submit(one, p, "test") for p in self.test_peptides]
        jobs += [pool.submit(one, p, "replicate") for p in self.test_peptides]
        pool.shutdown(wait=False)
        return jobs

    # ---- training ----------------------------------------------------------------------------
    def train_settings(self, name: str) -> dict:
        settings = deep_merge(self.config["train"], self.variants[name])
        reserve = self.args.reserve_minutes
        settings["max_minutes"] = round(max(0.2, self.minutes_left() - reserve), 2)
        settings["gpus"] = 1 if self.args.device == "cuda" else 0
        return settings

    def train_all(self) -> None:
        payload = self.args.payload
        validation_md = [str(p) for p in sorted((payload / "md").glob("*")) if (p / "traj.xtc").is_file()]
        processes = {}
        for name in self.variants:
            settings = self.train_settings(name)
            log(f"train {name}: {settings['max_minutes']} min, sigma {settings['sigma_nm']}, "
                f"{settings['model']['hidden_irreps']} x {settings['model']['num_layers']}")
            (self.work / "logs").mkdir(exist_ok=True)
            handle = (self.work / "logs" / f"train_{name}.log").open("w")
            command = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=1",
                       "-m", "jamun.cli", "train", "--train-shards", str(payload / "shards" / "train"),
                       "--val-shards", str(payload / "shards" / "val"), "-o",
                       str(self.work / f"train_{name}"), "--threads", "1", "--settings", json.dumps(settings)]
            command += ["--init-model", str(self.args.init_model)] if self.args.init_model else []
            command += ["--validation-md", *validation_md] if validation_md else []
            processes[name] = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        for name, process in processes.items():
            code = process.wait()
            model = self.work / f"train_{name}" / "model.ckpt"
            log(f"train {name}: exit {code}")
            if model.is_file():
                shutil.copy2(model, self.out / f"{name}.ckpt")

    # ---- sampling and evaluation ----------------------------------------------------------
    def sample_all(self) -> None:
        """One ``jamun sample`` per variant, all test peptides in one batch of chains."""
        settings = json.dumps(self.config["sample"])
        jobs = {}
        for name in self.variants:
            model = self.work / f"train_{name}" / "model.ckpt"
            if model.is_file():
                root = self.work / f"samples_{name}"
                output = root / self.test_peptides[0] if len(self.test_peptides) == 1 else root
                systems = [str(self.work / "md" / p / "system.pdb") for p in self.test_peptides]
                argv = ["sample", *self.test_peptides, "--model", str(model), "-o", str(output),
                        "--system", *systems, "--device", self.args.device, "--settings", settings]
                jobs[name] = self.jamun(*argv, log_name=f"sample_{name}.log", background=True)
        for name, job in jobs.items():
            log(f"sample {name}: exit {job.wait()}")

    def evaluate_all(self) -> None:
        settings = json.dumps(self.config["evaluate"])

        def one(name: str, peptide: str) -> int:
            md, samples = self.work / "md" / peptide, self.work / f"samples_{name}" / peptide
            return self.jamun("evaluate", peptide, "-o", str(self.work / f"evaluate_{name}" / peptide),
                              "--reference", str(md / "traj.xtc"), str(md / "md.json"), str(md / "topology.pdb"),
                              "--replicate", str(md / "replicate" / "traj.xtc"), str(md / "replicate" / "md.json"),
                              "--samples", str(samples / "samples.xtc"), str(samples / "sample.json"),
                              str(samples / "topology.pdb"), "--settings", settings,
                              log_name=f"evaluate_{name}_{peptide}.log")

        pairs = [(n, p) for n in self.variants for p in self.test_peptides
                 if (self.work / f"samples_{n}" / p / "samples.xtc").is_file()
                 and (self.work / "md" / p / "replicate" / "md.json").is_file()]
        with concurrent.futures.ThreadPoolExecutor(self.args.md_workers) as pool:
            codes = list(pool.map(lambda pair: one(*pair), pairs))
        log(f"evaluation: {codes.count(0)} of {len(pairs)} succeeded")
        for name in self.variants:
            metrics = sorted(str(p) for p in (self.work / f"evaluate_{name}").glob("*/metrics.json"))
            if metrics:
                self.jamun("summarize", *metrics, "-o", str(self.work / f"summary_{name}"), log_name=f"summarize_{name}.log")
                table = self.work / f"summary_{name}" / "metrics.csv"
                if table.is_file():
                    import pandas as pd

                    log(f"{name}:\n{pd.read_csv(table)[list(HEADLINE)].to_string(index=False)}")

    # ---- returning files ---------------------------------------------------------------------
    def pack_md(self, limit: int = 15 * 2**20) -> None:
        """The test MD as ``test_md_<k>.tar``, whole peptides per tar, each below ``limit`` bytes."""
        folders = sorted(p for p in (self.work / "md").glob("*") if p.is_dir())
        batches: list[list[Path]] = [[]]
        size = 0
        for folder in folders:
            files = [f for f in sorted(folder.rglob("*")) if f.is_file() and ".work" not in f.parts]
            folder_size = sum(f.stat().st_size for f in files)
            if batches[-1] and size + folder_size > limit:
                batches.append([])
                size = 0
            batches[-1].extend(files)
            size += folder_size
        for k, files in enumerate(b for b in batches if b):
            with tarfile.open(self.out / f"test_md_{k}.tar", "w") as tar:
                for path in files:
                    tar.add(path, arcname=str(path.relative_to(self.work)))

    def pack(self) -> None:
        keep = ("train.json", "metrics.csv", "loss.png", "sample.json", "metrics.json", "ramachandran.png",
                "jsd_vs_time.png", "summary.png", "md.json")
        with tarfile.open(self.out / "results.tar.gz", "w:gz") as tar:
            for path in sorted(self.work.rglob("*")):
                relative = path.relative_to(self.work)
                if ".work" in relative.parts or relative.parts[0] == "md":
                    continue
                if path.is_file() and (path.name in keep or relative.parts[0] in ("bench", "logs")):
                    tar.add(path, arcname=str(relative))
        self.pack_md()
        for path in sorted(self.out.iterdir()):
            log(f"returned {path.name}: {path.stat().st_size / 2**20:.2f} MiB")


def run(args: argparse.Namespace) -> None:
    state = Run(args)
    log(f"{len(state.variants)} variants, test peptides {' '.join(state.test_peptides)}, device {args.device}, "
        f"deadline {args.deadline_minutes} min")
    try:
        md_jobs = state.start_md()
        state.train_all()
        state.sample_all()
        # Benchmarks take the GPU while evaluation takes the CPU cores.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            bench = pool.submit(state.benchmarks) if args.device == "cuda" and args.bench else None
            for job in md_jobs:
                try:
                    log(job.result(timeout=max(1.0, 60 * (state.minutes_left() - 1.0))))
                except concurrent.futures.TimeoutError:
                    log("test MD still running: evaluation skips the peptides without it")
            state.evaluate_all()
            if bench is not None:
                bench.result()
    finally:
        state.pack()
        log(f"done after {(time.monotonic() - state.started) / 60:.1f} min")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("payload", help="copy shards and validation MD into one folder to carry")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--config", type=Path, default=ROOT / "config/pretrain.yaml")
    p.add_argument("-o", "--output", type=Path, default=Path(".gpu_payload"))
    p.set_defaults(func=make_payload)
    p = sub.add_parser("run", help="benchmarks, test MD, training variants, sampling, evaluation")
    p.add_argument("--payload", type=Path, default=Path(".gpu_payload"))
    p.add_argument("--config", type=Path, default=ROOT / "config/pretrain.yaml")
    p.add_argument("--variants", type=Path, default=ROOT / "config/pretrain_variants.yaml")
    p.add_argument("--out", type=Path, required=True, help="the files to return ($OUT on the device machine)")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_run"))
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--deadline-minutes", type=float, default=9.0, help="everything ends by then")
    p.add_argument("--reserve-minutes", type=float, default=2.7,
                   help="left after training for sampling, evaluation and packing")
    p.add_argument("--no-bench", dest="bench", action="store_false")
    p.add_argument("--bench-seconds", type=float, default=40.0, help="time limit per benchmark script")
    p.add_argument("--md-workers", type=int, default=max(1, (os.cpu_count() or 2) - 3))
    p.add_argument("--peptides", nargs="+", default=None, help="test peptides (default: the config's test list)")
    p.add_argument("--test-md", type=Path, default=None, help="MD folders of the test peptides from an earlier run")
    p.add_argument("--init-model", type=Path, default=None, help="every variant starts from this checkpoint")
    p.set_defaults(func=run)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
