# Shared settings of the rules. Each rule gets only its own config section as a JSON param, so a
# changed sampler key reruns sampling and evaluation, never MD or training. Rules call `jamun`
# from PATH (the activated venv or conda env; `make run` puts .venv/bin first).
import json

from jamun.roles import PeptideRoles

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
