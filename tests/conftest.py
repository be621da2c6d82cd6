"""Shared test helpers: a throw-away copy of the workflow to run Snakemake in."""

from __future__ import annotations

import os
import shutil
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
