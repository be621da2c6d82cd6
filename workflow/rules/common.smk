# Shared settings of the rules. Each rule gets only its own config section as a JSON param, so a
# changed sampler key reruns sampling and evaluation, never MD or training. Rules call `jamun`
# from PATH (the activated venv or conda env; `make run` puts .venv/bin first).
import json

from jamun.roles import PeptideRoles
from jamun.sequence import residue_label, validate_sequence

# Peptide lists, checked (overlaps, evaluate_train membership) by the package.
ROLES = PeptideRoles.from_config(config["peptides"])
# A second model (shipped name or checkpoint path) for the held-out test peptides; None = off.
PRETRAINED = config["pretrained_model"]


wildcard_constraints:
    peptide="[ACDEFGHIKLMNPQRSTVWY]{1,8}",
    split="train|val",


def settings(section):
    """A config section as one JSON string, for `jamun ... --settings`."""
    return json.dumps(config[section], sort_keys=True)


def all_targets():
    # Samples are targets too, so deleting one peptide's samples reruns its sampling, its
    # evaluation and the summary (an intermediate file alone would not be regenerated).
    targets = expand("results/samples/{peptide}/samples.xtc", peptide=ROLES.evaluated)
    targets += expand("results/evaluate/{peptide}/metrics.json", peptide=ROLES.evaluated)
    targets += ["results/summary/metrics.csv", "results/summary/provenance.txt"]
    if PRETRAINED is not None and ROLES.test:
        targets += expand("results/pretrained/samples/{peptide}/samples.xtc", peptide=ROLES.test)
        targets += expand("results/pretrained/evaluate/{peptide}/metrics.json", peptide=ROLES.test)
        targets.append("results/summary/models.csv")
    return targets


def split_inputs(wildcards):
    """Inputs of `shard` for one split: its peptide list and its peptides' MD."""
    peptides = getattr(ROLES, wildcards.split)
    return {
        "peptides": config["peptides"][wildcards.split],
        "traj": [f"results/md/{p}/traj.xtc" for p in peptides],
        "topology": [f"results/md/{p}/topology.pdb" for p in peptides],
    }


# The report (snakemake --report): every figure carries the labels peptide, role and figure,
# which the report shows as the columns of one table per category. Per-peptide figures are
# grouped by role (a subcategory each), so that within a table no label has exactly two values
# in equal numbers, which Snakemake's report would turn into a toggle hiding half of the rows.
ROLE_SUBCATEGORY = {"train": "train peptides", "test": "test peptides (held out)"}


def role_subcategory(wildcards):
    """Report subcategory of a per-peptide figure: its peptide's role."""
    return ROLE_SUBCATEGORY[ROLES.role(wildcards.peptide)]


def peptide_labels(figure):
    """Report labels of a per-peptide figure, e.g. {"peptide": "GN (GLY-ASN)", "role": "test",
    "figure": "Ramachandran maps"}; the role is ROLES.role (train or test)."""

    def labels(wildcards):
        peptide = wildcards.peptide
        return {
            "peptide": f"{peptide} ({residue_label(peptide)})",
            "role": ROLES.role(peptide),
            "figure": figure,
        }

    return labels


def summary_labels(figure, peptides="all evaluated", role="train and test"):
    """Report labels of a figure or table about several peptides (figure first: the table's
    first column, never a toggle)."""
    return {"figure": figure, "peptide": peptides, "role": role}


def refuse_peptide(wildcards):
    """Input function of `invalid_peptide`: the sequence check's message (names the valid letters)."""
    validate_sequence(wildcards.peptide)
    return []
