# A target for a peptide id the rules cannot take (e.g. results/md/GX/traj.xtc) lands here, so
# Snakemake reports why, naming the id and the valid letters (refuse_peptide in common.smk),
# instead of "No rule to produce". Its input function always fails: the job never runs.


rule invalid_peptide:
    input:
        refuse_peptide,
    output:
        "results/{folder}/{peptide}/{file}",
    log:
        "results/logs/invalid_peptide/{folder}/{peptide}/{file}.log",
    wildcard_constraints:
        folder="md|samples|evaluate|pretrained/samples|pretrained/evaluate",
        peptide="(?![ACDEFGHIKLMNPQRSTVWY]{1,8}/)[^/]+",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "false > {log}"
