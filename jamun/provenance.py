"""Provenance for the report: the configuration that ran and the versions of what ran it."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import yaml

from jamun.atomic import write_text_atomic

PACKAGES = (
    "jamun", "snakemake", "openmm", "pdbfixer", "torch", "e3nn", "torch-cluster", "mdtraj",
    "deeptime", "numpy", "scipy", "pandas", "matplotlib",
)


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package, ``"not installed"`` where absent."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_provenance(config: dict, out_file: Path) -> None:
    """Write package versions and the full workflow config as YAML text to ``out_file`` (atomically)."""
    write_text_atomic(out_file, yaml.safe_dump({"versions": package_versions(), "config": config}, sort_keys=False))
