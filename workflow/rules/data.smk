# Dataset sharding: heavy-atom frames of each split's trajectories, shuffled into shards. The
# peptide list is an input, so editing it reshards; an empty list has no shard job at all.


def split_inputs(wildcards):
    peptides = getattr(ROLES, wildcards.split)
    return {
        "peptides": config["peptides"][wildcards.split],
        "traj": [f"results/md/{p}/traj.xtc" for p in peptides],
        "topology": [f"results/md/{p}/topology.pdb" for p in peptides],
    }


rule shard:
    input:
        unpack(split_inputs),
    output:
        manifest="results/shards/{split}/manifest.csv",
        stats="results/shards/{split}/stats.json",
    params:
        data=settings("data"),
    conda:
        "../../envs/torch.yaml"
    log:
        "results/logs/shard/{split}.log",
    benchmark:
        "results/benchmarks/shard/{split}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "jamun shard {wildcards.split} --peptides {input.peptides} --traj {input.traj} "
        "--topology {input.topology} -o results/shards/{wildcards.split} "
        "--settings {params.data:q} > {log} 2>&1"
