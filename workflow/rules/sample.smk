# Walk-jump sampling from the sequence alone: needs the built structure and the model, never the
# target's MD (that is what transferable means).


rule sample:
    input:
        system="results/md/{peptide}/system.pdb",
        model="results/train/model.ckpt",
    output:
        samples="results/samples/{peptide}/samples.xtc",
        topology="results/samples/{peptide}/topology.pdb",
        meta="results/samples/{peptide}/sample.json",
    params:
        sample=settings("sample"),
    conda:
        "../../envs/torch.yaml"
    log:
        "results/logs/sample/{peptide}.log",
    benchmark:
        "results/benchmarks/sample/{peptide}.tsv"
    # One thread on CPU (snakemake sets OMP_NUM_THREADS): peptides sample side by side, faster than
    # one at a time on all cores (the demo's 2 threads took 234 s for a peptide on 2 cores).
    threads: workflow.cores if config["train"]["gpus"] > 0 else 1
    resources:
        gpu=1 if config["train"]["gpus"] > 0 else 0,
        mem_mb=8000,
        runtime=12 * 60,
    shell:
        "{JAMUN} sample {wildcards.peptide} --model {input.model} --system {input.system} "
        "-o results/samples/{wildcards.peptide} --settings {params.sample:q} > {log} 2>&1"
