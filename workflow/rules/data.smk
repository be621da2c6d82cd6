# Dataset sharding: heavy-atom frames of each split's trajectories, shuffled into shards. The
# peptide list is an input, so editing it reshards; an empty list has no shard job at all.
# Inputs per split: split_inputs (common.smk).


rule shard:
    input:
        unpack(split_inputs),
    output:
        manifest="results/shards/{split}/manifest.csv",
        stats="results/shards/{split}/stats.json",
    log:
        "results/logs/shard/{split}.log",
    benchmark:
        "results/benchmarks/shard/{split}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        data=settings("data"),
    shell:
        "jamun shard {wildcards.split} --peptides {input.peptides} --traj {input.traj} "
        "--topology {input.topology} -o results/shards/{wildcards.split} "
        "--settings {params.data:q} > {log} 2>&1"
