# Denoiser training. With train.gpus > 1 one job runs torchrun, which starts one DDP process
# per GPU (DESIGN.md §8); on CPU it uses the job's threads.


def train_launcher():
    gpus = config["train"]["gpus"]
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node={gpus} -m jamun.cli"
    return JAMUN


rule train:
    input:
        expand("results/shards/{split}/manifest.csv", split=SPLITS),
        stats="results/shards/train/stats.json",
    output:
        model="results/train/model.ckpt",
        metrics="results/train/metrics.csv",
        loss=report(
            "results/train/loss.png",
            caption="../report/loss.rst",
            category="Training",
        ),
        summary="results/train/train.json",
    params:
        train=settings("train"),
        launcher=train_launcher(),
    conda:
        "../../envs/torch.yaml"
    log:
        "results/logs/train/train.log",
    benchmark:
        "results/benchmarks/train/train.tsv"
    threads: workflow.cores
    resources:
        gpu=config["train"]["gpus"],
        mem_mb=16000,
        runtime=24 * 60,
    shell:
        "{params.launcher} train --shards results/shards -o results/train "
        "--threads {threads} --settings {params.train:q} > {log} 2>&1"
