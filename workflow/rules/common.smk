# Shared input functions and settings. Each rule gets only its own config section as a JSON
# param, so a changed sampler key reruns sampling and evaluation, never MD or training.
import json
import os
import shutil
import sys
from pathlib import Path

from jamun.config import PeptideRoles

# Without an activated venv (`.venv/bin/snakemake ...`) jobs find `jamun` and `torchrun` next to
# the Python running Snakemake; a `jamun` already on PATH (activated venv, conda) is kept.
if shutil.which("jamun") is None:
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

ROLES = PeptideRoles.from_config(config["peptides"])
for _peptide in config["peptides"]["evaluate_train"]:
    if not ROLES.is_training(_peptide):
        raise ValueError(
            f"peptides.evaluate_train lists {_peptide!r}, which is in neither the train list "
            f"({config['peptides']['train']}) nor the val list ({config['peptides']['val']})"
        )
EVALUATED = list(ROLES.test) + [
    p for p in config["peptides"]["evaluate_train"] if p not in ROLES.test
]
SPLITS = ["train", "val"] if ROLES.val else ["train"]
# A second model (shipped name or checkpoint path) for the held-out test peptides; None = off.
PRETRAINED = config["pretrained_model"]
JAMUN = "jamun"


wildcard_constraints:
    peptide="[ACDEFGHIKLMNPQRSTVWY]{1,8}",
    split="train|val",


def settings(section):
    """A config section as one JSON string, for `jamun ... --settings`."""
    return json.dumps(config[section], sort_keys=True)


def all_targets():
    # Samples are targets too, so deleting one peptide's samples reruns its sampling, its
    # evaluation and the summary (an intermediate file alone would not be regenerated).
    targets = expand("results/samples/{peptide}/samples.xtc", peptide=EVALUATED)
    targets += expand("results/evaluate/{peptide}/metrics.json", peptide=EVALUATED)
    targets.append("results/summary/metrics.csv")
    if PRETRAINED is not None and ROLES.test:
        targets += expand("results/pretrained/samples/{peptide}/samples.xtc", peptide=ROLES.test)
        targets += expand("results/pretrained/evaluate/{peptide}/metrics.json", peptide=ROLES.test)
        targets.append("results/summary/models.csv")
    return targets
