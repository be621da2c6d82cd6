"""The CLI stages chained on real files in a throw-away folder, each inside its conda env's packages.

One tiny pipeline (build, simulate, shard, train, sample, evaluate, summarize, provenance, compare,
with config/ci.yaml's settings) runs in a temporary working directory that has no ``results/``:
every path is named on the command line. Each command runs in its own Python process as it would
in the conda env that its rule names (``conda:`` in workflow/rules/*.smk): without the installed
site-packages, on a folder that links only what the env's packages (envs/*.yaml) and their
dependencies installed. A command that needs anything else fails, while optional imports (mdtraj
tries ``openmm.unit``) take their fallback as they would in the env. The process records the
top-level modules it imported, which must all come from the env.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from test_envs import normalise

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "config" / "ci.yaml")
# Run with `python -I -S` (no site-packages): argv[1] the record file, argv[2] the env's package
# folder; then one CLI command as the `jamun` script runs it.
RECORDER = f"""
import json, sys
record, site, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path[:0] = [{str(ROOT)!r}, site]
from jamun.cli import main
try:
    code = main(argv)
finally:
    with open(record, "w") as handle:
        json.dump(sorted({{name.split(".")[0] for name in sys.modules}}), handle)
sys.exit(code)
"""


def rule_commands() -> dict[str, set[str]]:
    """``{env file name: jamun subcommands of the rules that name it}``, read from the rule files."""
    commands: dict[str, set[str]] = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        blocks = re.split(r"^\s*rule (\w+):", smk.read_text(), flags=re.M)[1:]
        for name, body in zip(blocks[::2], blocks[1::2]):
            env = re.search(r'conda:\s*"\.\./\.\./envs/([\w.]+)"', body)
            used = set(re.findall(r"\bjamun (\w+)", body))
            assert env or not used, f"rule {name} runs jamun {used} but names no conda env"
            if env:
                commands.setdefault(env.group(1), set()).update(used)
    return commands


def env_of(command: str) -> str:
    """The env file of the rules that run ``jamun COMMAND``."""
    [env] = [env for env, commands in rule_commands().items() if command in commands]
    return env


@cache
def env_distributions(env_name: str) -> frozenset[str]:
    """Normalised names of the env's packages and, transitively, their dependencies."""
    listed = yaml.safe_load((ROOT / "envs" / env_name).read_text())["dependencies"]
    todo = [normalise(re.split(r"[=<>\s]", spec, maxsplit=1)[0]) for spec in listed if isinstance(spec, str)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in ("python", "pip"):
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(normalise(requirement.name))
    return frozenset(seen)


def provided_modules(env_name: str) -> frozenset[str]:
    """Top-level modules that the env's distributions install."""
    names = env_distributions(env_name)
    return frozenset(module for module, dists in metadata.packages_distributions().items()
                     if any(normalise(d) in names for d in dists))


def installed_third_party() -> set[str]:
    """Top-level modules of every installed distribution except jamun itself."""
    return set(metadata.packages_distributions()) - {"jamun"}


def env_site(env_name: str, root: Path) -> Path:
    """A folder linking what the env's distributions installed in site-packages (and their metadata)."""
    site = root / f"site-{env_name}"
    if site.is_dir():
        return site
    site.mkdir()
    names = env_distributions(env_name)
    for dist in metadata.distributions():
        if normalise(dist.metadata["Name"]) not in names:
            continue
        base = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            if (base / top).exists() and not (site / top).exists():
                (site / top).symlink_to(base / top)
    return site


def run_stage(work: Path, imports: dict[str, list[list[str]]], *argv: str) -> None:
    """Run ``jamun ARGV`` in ``work`` on its env's packages only; keep the modules it imported."""
    env = env_of(argv[0])
    record = work / f"imports-{argv[0]}-{len(imports.get(argv[0], []))}.json"
    site = env_site(env, work.parent)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", RECORDER, str(record), str(site), *argv], cwd=work,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"jamun {' '.join(argv)} failed in envs/{env}:\n{result.stderr[-3000:]}"
    imports.setdefault(argv[0], []).append(json.loads(record.read_text()))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, dict[str, list[list[str]]]]:
    """A pipeline on AA (train) and GN (held-out) in a fresh folder; returns it and the imports."""
    work = tmp_path_factory.mktemp("pipeline")
    imports: dict[str, list[list[str]]] = {}
    cfg = ("--config", CONFIG)
    (work / "train.txt").write_text("AA\n")
    for peptide in ("AA", "GN"):
        run_stage(work, imports, "build", peptide, "-o", f"md/{peptide}")
    run_stage(work, imports, "simulate", "AA", "--system", "md/AA/system.pdb", "-o", "md/AA", "--role", "train",
              "--threads", "1", *cfg)
    run_stage(work, imports, "simulate", "GN", "--system", "md/GN/system.pdb", "-o", "md/GN", "--role", "test",
              "--threads", "1", *cfg)
    run_stage(work, imports, "simulate", "GN", "--system", "md/GN/system.pdb", "-o", "md/GN/rep",
              "--role", "replicate", "--threads", "1", *cfg)
    run_stage(work, imports, "shard", "train", "--peptides", "train.txt", "--traj", "md/AA/traj.xtc",
              "--topology", "md/AA/topology.pdb", "-o", "shards/train", *cfg)
    run_stage(work, imports, "train", "--train-shards", "shards/train", "-o", "model", "--threads", "1",
              "--settings", json.dumps({**yaml.safe_load(Path(CONFIG).read_text())["train"], "max_steps": 5,
                                        "sample_check": {"every": None}}))
    run_stage(work, imports, "sample", "GN", "--model", "model/model.ckpt", "--system", "md/GN/system.pdb",
              "-o", "samples/GN", *cfg)
    run_stage(work, imports, "evaluate", "GN", "--reference", "md/GN/traj.xtc", "md/GN/md.json",
              "md/GN/topology.pdb", "--replicate", "md/GN/rep/traj.xtc", "md/GN/rep/md.json",
              "--samples", "samples/GN/samples.xtc", "samples/GN/sample.json", "samples/GN/topology.pdb",
              "-o", "evaluation/GN", *cfg)
    run_stage(work, imports, "summarize", "evaluation/GN/metrics.json", "-o", "summary")
    run_stage(work, imports, "provenance", "-o", "summary/provenance.txt", *cfg)
    run_stage(work, imports, "compare", "--model", "model/model.ckpt", "evaluation", "workflow model",
              "--peptides", "GN", "-o", "summary")
    return work, imports


def test_stages_need_no_results_folder(pipeline):
    """Every stage wrote where it was told, the chain is consistent, and no results/ appeared."""
    work, _ = pipeline
    assert not (work / "results").exists()
    manifest = (work / "shards" / "train" / "manifest.csv").read_text()
    assert "AA" in (work / "shards" / "train" / "peptides.json").read_text() and manifest.count("\n") >= 2
    train = json.loads((work / "model" / "train.json").read_text())
    assert train["steps"] == 5 and train["train_peptides"] == ["AA"] and train["val_frames"] == 0  # no --val-shards
    sample = json.loads((work / "samples" / "GN" / "sample.json").read_text())
    assert sample["chains"] == 4 and sample["sequence"] == "GN"
    metrics = json.loads((work / "evaluation" / "GN" / "metrics.json").read_text())
    assert metrics["peptide"] == "GN"
    summary = (work / "summary" / "metrics.csv").read_text().splitlines()
    assert len(summary) == 2 and summary[1].startswith("GN")


def third_party(modules: list[str]) -> set[str]:
    """The imported top-level modules that some installed distribution other than jamun provides."""
    return set(modules) & installed_third_party()


ENV_FILES = sorted(p.name for p in (ROOT / "envs").glob("*.yaml"))


@pytest.mark.parametrize("env_name", ENV_FILES)
def test_env_provides_every_module_its_rules_import(pipeline, env_name):
    _, imports = pipeline
    commands = rule_commands()[env_name]
    assert commands, f"no rule names envs/{env_name}"
    provided = provided_modules(env_name)
    for command in sorted(commands):
        assert command in imports, f"the pipeline test does not run `jamun {command}` (a rule in {env_name} does)"
        for modules in imports[command]:
            missing = sorted(third_party(modules) - provided)
            assert not missing, f"`jamun {command}` (envs/{env_name}) imports {missing}, which no package of the env provides"


@pytest.mark.parametrize("command, forbidden", [("evaluate", {"torch", "openmm"}), ("summarize", {"torch", "openmm"}),
                                                ("sample", {"openmm", "pdbfixer"}), ("train", {"openmm", "pdbfixer"}),
                                                ("shard", {"openmm", "pdbfixer"}), ("simulate", {"torch"}),
                                                ("build", {"torch"})])
def test_stages_import_only_their_engine(pipeline, command, forbidden):
    """MD never imports torch; the model stages never import OpenMM; evaluation imports neither."""
    _, imports = pipeline
    for modules in imports[command]:
        assert not forbidden & set(modules), f"`jamun {command}` imports {sorted(forbidden & set(modules))}"
