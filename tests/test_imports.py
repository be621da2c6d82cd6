"""Stages that need no MD engine import none: sampling, training and evaluation run where OpenMM
and pdbfixer are not installed (a GPU node, the torch and analysis conda envs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Import the module with OpenMM and pdbfixer made unimportable, as where they are not installed.
BLOCKED = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('openmm', 'pdbfixer', 'simtk'):
            raise ImportError(f'{name} is not installed here')
sys.meta_path.insert(0, Missing())
import MODULE
"""


@pytest.mark.parametrize("module", ["jamun.sampling", "jamun.training", "jamun.analysis", "jamun.roles",
                                    "jamun.model.pretrained", "jamun.cli"])
def test_module_imports_without_md_engine(module):
    result = subprocess.run([sys.executable, "-c", BLOCKED.replace("MODULE", module)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]


def test_the_builder_does_need_openmm():
    """The check above can fail: the module that builds peptides is refused."""
    result = subprocess.run([sys.executable, "-c", BLOCKED.replace("MODULE", "jamun.peptides")], capture_output=True,
                            text=True)
    assert result.returncode != 0 and "openmm is not installed here" in result.stderr
