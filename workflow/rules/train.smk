# Denoiser training. `jamun train` runs one process per GPU itself (torchrun, with train.gpus > 1);
# on CPU it runs on one thread: the demo model's ops are too small for intra-op threads (2-core
# machine, 2026-12-03: 127 graphs/s with 1 thread, 75 with 2, benchmarks/train_throughput.py),
# and the other core is left to MD or sampling jobs. The validation shards and the validation
# peptides' MD (for the sample checks that choose model.ckpt) are inputs only when the val list
# is not empty.


rule train:
    input:
        train="results/shards/train/manifest.csv",
        train_stats="results/shards/train/stats.json",
        val=branch(bool(ROLES.val), then="results/shards/val/manifest.csv", otherwise=[]),
        validation_md=expand(
            "results/md/{peptide}/{file}",
            peptide=ROLES.val,
            file=["system.pdb", "traj.xtc", "topology.pdb"],
        ),
    output:
        model="results/train/model.ckpt",
        metrics="results/train/metrics.csv",
        loss=report(
            "results/train/loss.png",
            caption="../report/loss.rst",
            category="Training",
            labels=summary_labels("loss and sample checks", "train and val lists", "train"),
        ),
        summary="results/train/train.json",
    log:
        "results/logs/train/train.log",
    benchmark:
        "results/benchmarks/train/train.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: workflow.cores if config["train"]["gpus"] > 0 else 1
    resources:
        gpu=config["train"]["gpus"],
        mem_mb=16000,
        runtime=24 * 60,
    params:
        train=settings("train"),
        val_shards="--val-shards results/shards/val" if ROLES.val else "",
        validation_md=(
            " ".join(["--validation-md", *expand("results/md/{p}", p=ROLES.val)])
            if ROLES.val
            else ""
        ),
    shell:
        "jamun train --train-shards results/shards/train {params.val_shards} -o results/train "
        "--threads {threads} --settings {params.train:q} {params.validation_md} > {log} 2>&1"
