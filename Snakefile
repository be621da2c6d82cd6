# jamun-pipeline: MD data -> shards -> denoiser training -> walk-jump sampling -> evaluation.
# Logic lives in the `jamun` package; the rules only call the `jamun` CLI.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, schema="workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/md.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/pretrained.smk"


rule all:
    input:
        all_targets(),
