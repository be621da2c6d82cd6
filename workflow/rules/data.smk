# Dataset sharding: heavy-atom frames of each split's trajectories, shuffled into shards.


def split_trajectories(wildcards):
    peptides = getattr(ROLES, wildcards.split)
    return {
        "traj": [f"results/md/{p}/traj.xtc" for p in peptides],
        "topology": [f"results/md/{p}/topology.pdb" for p in peptides],
    }


rule shard:
    input:
        unpack(split_trajectories),
    output:
        manifest="results/shards/{split}/manifest.csv",
        stats="results/shards/{split}/stats.json",
    params:
        data=settings("data"),
        peptides=lambda wc: config["peptides"][wc.split],
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
        "{JAMUN} shard {wildcards.split} --peptides {params.peptides} "
        "-o results/shards/{wildcards.split} --settings {params.data:q} > {log} 2>&1"
