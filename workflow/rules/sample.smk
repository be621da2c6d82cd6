# Walk-jump sampling from the sequence alone: needs the built structure and the model, never the
# target's MD (that is what transferable means). The device is sample.device; a CUDA device
# requests one GPU per job. On CPU one thread per job: peptides sample side by side, faster than
# one at a time on all cores (the demo's 2 threads took 234 s for a peptide on 2 cores).
SAMPLE_GPUS = 1 if config["sample"]["device"].startswith("cuda") else 0


rule sample:
    input:
        system="results/md/{peptide}/system.pdb",
        model="results/train/model.ckpt",
    output:
        samples="results/samples/{peptide}/samples.xtc",
        topology="results/samples/{peptide}/topology.pdb",
        meta="results/samples/{peptide}/sample.json",
    log:
        "results/logs/sample/{peptide}.log",
    benchmark:
        "results/benchmarks/sample/{peptide}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=SAMPLE_GPUS,
        mem_mb=8000,
        runtime=12 * 60,
    params:
        sample=settings("sample"),
    shell:
        "jamun sample {wildcards.peptide} --model {input.model} --system {input.system} "
        "-o results/samples/{wildcards.peptide} --settings {params.sample:q} > {log} 2>&1"
