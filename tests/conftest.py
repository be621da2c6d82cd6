"""Shared test helpers: a throw-away copy of the workflow to run Snakemake in, and the one real
run of ``config/ci.yaml`` (session fixture ``ci_run``) that tests/test_workflow_run.py,
tests/test_slurm_real.py and tests/test_report_browser.py share, so CI runs it once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Workflow rules call `jamun` from PATH, as in an activated venv: the one running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
WORKFLOW_PARTS = ("workflow", "config", "envs")


def copy_workflow_to(dest: Path) -> Path:
    """Copy Snakefile, workflow/, config/ and envs/ (no results) into ``dest``; return it."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest)
    for folder in WORKFLOW_PARTS:
        shutil.copytree(ROOT / folder, dest / folder, symlinks=True)
    return dest


@pytest.fixture
def copy_workflow() -> Callable[[Path], Path]:
    """The :func:`copy_workflow_to` function, for tests that run Snakemake."""
    return copy_workflow_to


SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SHIPPED_RECORD = {"device": "NVIDIA H200", "wall_seconds": 300.0, "steps": 1000, "selected_step": 1000,
                  "n_parameters": 4166, "sigma_nm": 0.01, "train_peptides": ["ET"], "val_peptides": []}


def tiny_checkpoint(path: Path, seed: int) -> Path:
    """An untrained tiny denoiser with a GPU training record, standing in for a shipped model."""
    import torch

    import jamun.model

    torch.manual_seed(seed)
    config = {"sigma_nm": 0.01, "hidden_irreps": "8x0e + 2x1e", "num_layers": 2, "radial_hidden": 8,
              "num_radial": 4}
    return jamun.model.save(jamun.model.Denoiser(config, C=0.3), path, train=SHIPPED_RECORD)


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> Path:
    """``config/ci.yaml`` run end to end on 2 local cores in a copy of the workflow (its folder);
    ``pretrained_model`` is a tiny checkpoint (``shipped.ckpt`` next to the folder)."""
    import yaml

    workdir = copy_workflow_to(tmp_path_factory.mktemp("ci_workflow"))
    shipped = tiny_checkpoint(workdir.parent / "shipped.ckpt", seed=0)
    config = yaml.safe_load((workdir / "config/ci.yaml").read_text())
    config["pretrained_model"] = str(shipped)
    (workdir / "config/ci.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [SNAKEMAKE, "--cores", "2", "--configfile", "config/ci.yaml"],
        cwd=workdir, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir
