"""The conda environments in envs/ pin the same versions as requirements.lock.

Names differ between conda-forge and PyPI (``pytorch`` / ``torch``) and in spelling (``OpenMM`` /
``openmm``, ``PyYAML`` / ``pyyaml``), so both sides are normalised before comparing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
# conda-forge name -> PyPI name, where they differ.
CONDA_TO_PYPI = {"pytorch": "torch"}
UNPINNED = {"python", "pip"}  # interpreter and installer; python is checked on its own
SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:(==|=)\s*([^\s=]+))?\s*$")


def normalise(name: str) -> str:
    """PEP 503 normalised name, conda-forge names mapped to PyPI ones."""
    name = re.sub(r"[-_.]+", "-", name).lower()
    return CONDA_TO_PYPI.get(name, name)


def read_lock(path: Path = ROOT / "requirements.lock") -> dict[str, str]:
    """``{normalised name: version}`` from ``name==version`` lines."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[normalise(name)] = version.strip()
    return pins


def read_env(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """``{normalised name: (operator, version)}`` of an env file's conda dependencies."""
    env = yaml.safe_load(path.read_text())
    specs = {}
    for dependency in env["dependencies"]:
        if isinstance(dependency, dict):  # a `pip:` sub-list
            raise AssertionError(f"{path.name}: pip section {dependency}; use post-deploy")
        match = SPEC.match(dependency)
        assert match, f"{path.name}: cannot parse dependency {dependency!r}"
        name, operator, version = match.groups()
        specs[normalise(name)] = (operator, version)
    return specs


def test_env_files_exist():
    assert {p.stem for p in ENV_FILES} == {"md", "torch", "analysis"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_agree_with_lock(env_file):
    lock = read_lock()
    for name, (operator, version) in read_env(env_file).items():
        if name in UNPINNED:
            continue
        assert name in lock, f"{env_file.name} pins {name}, which requirements.lock does not list"
        assert operator == "==", f"{env_file.name}: pin {name} with ==, not {operator}{version}"
        assert version == lock[name], (
            f"{env_file.name} pins {name}=={version}, requirements.lock has {lock[name]}"
        )


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_python_and_channels(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"][0] == "conda-forge"
    assert read_env(env_file)["python"] == ("=", "3.11"), "the lock was made with Python 3.11"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_installs_jamun_after_deploy(env_file):
    """Snakemake runs <env>.post-deploy.sh in the new env; it must install jamun from the repo."""
    script = env_file.with_suffix(".post-deploy.sh")
    assert script.is_file(), f"{script.name} is missing"
    assert "pip install --no-deps -e ." in script.read_text()


def test_normalise_maps_conda_and_pypi_spellings():
    assert normalise("OpenMM") == normalise("openmm")
    assert normalise("PyYAML") == normalise("pyyaml")
    assert normalise("pytorch") == normalise("torch") == "torch"
    assert normalise("opt_einsum") == normalise("opt-einsum")
