# jamun-pipeline: MD data -> shards -> denoiser training -> walk-jump sampling -> evaluation.
# Logic lives in the `jamun` package; the rules only call the `jamun` CLI.
from snakemake.utils import min_version

from jamun.workflow_config import check_workflow_config

min_version("9.0")


configfile: "config/config.yaml"


# The schema (workflow/schemas/config.schema.yaml) with its defaults, as snakemake.utils.validate
# would, plus what every stage checks when its job starts (cross-key rules, peptide lists): a
# mistake stops the dry run with one line instead of one job hours later.
config.update(check_workflow_config(config, "workflow config"))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/md.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/pretrained.smk"
include: "workflow/rules/invalid.smk"


rule all:
    input:
        all_targets(),
