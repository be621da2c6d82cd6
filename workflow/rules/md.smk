# MD data: build each peptide, then simulate it (train/test role) and its replicate (seed + 1).
# Resume state lives in results/md/<peptide>/.work, outside the declared outputs, because
# Snakemake deletes the outputs of a failed job; rerun with --rerun-incomplete to resume.


rule build:
    output:
        "results/md/{peptide}/system.pdb",
    log:
        "results/logs/build/{peptide}.log",
    benchmark:
        "results/benchmarks/build/{peptide}.tsv"
    conda:
        "../../envs/md.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "jamun build {wildcards.peptide} -o results/md/{wildcards.peptide} > {log} 2>&1"


rule simulate:
    input:
        system="results/md/{peptide}/system.pdb",
    output:
        traj="results/md/{peptide}/traj.xtc",
        topology="results/md/{peptide}/topology.pdb",
        meta="results/md/{peptide}/md.json",
    log:
        "results/logs/simulate/{peptide}.log",
    benchmark:
        "results/benchmarks/simulate/{peptide}.tsv"
    conda:
        "../../envs/md.yaml"
    threads: 1 if config["md"]["protocol"] == "implicit" else 4
    resources:
        gpu=1 if config["md"]["platform"] == "CUDA" else 0,
        mem_mb=4000,
        runtime=24 * 60,
    params:
        md=settings("md"),
        role=lambda wc: ROLES.role(wc.peptide),
    shell:
        "jamun simulate {wildcards.peptide} --system {input.system} -o results/md/{wildcards.peptide} "
        "--role {params.role} --threads {threads} --settings {params.md:q} > {log} 2>&1"


rule simulate_replicate:
    input:
        system="results/md/{peptide}/system.pdb",
    output:
        traj="results/md/{peptide}/replicate/traj.xtc",
        topology="results/md/{peptide}/replicate/topology.pdb",
        meta="results/md/{peptide}/replicate/md.json",
    log:
        "results/logs/simulate_replicate/{peptide}.log",
    benchmark:
        "results/benchmarks/simulate_replicate/{peptide}.tsv"
    conda:
        "../../envs/md.yaml"
    threads: 1 if config["md"]["protocol"] == "implicit" else 4
    resources:
        gpu=1 if config["md"]["platform"] == "CUDA" else 0,
        mem_mb=4000,
        runtime=24 * 60,
    params:
        md=settings("md"),
    shell:
        "jamun simulate {wildcards.peptide} --system {input.system} "
        "-o results/md/{wildcards.peptide}/replicate --role replicate --threads {threads} "
        "--settings {params.md:q} > {log} 2>&1"
