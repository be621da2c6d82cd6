# Denoiser training. With train.gpus > 1 one job runs torchrun, which starts one DDP process
# per GPU (DESIGN.md §8). On CPU it runs on one thread: the demo model's ops are too small for
# intra-op threads (2-core machine, 2026-12-03: 127 graphs/s with 1 thread, 75 with 2,
# benchmarks/train_throughput.py), and the other core is left to MD or sampling jobs.


def train_launcher():
    gpus = config["train"]["gpus"]
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node={gpus} -m jamun.cli"
    return JAMUN


# The validation peptides' MD for the sample checks that choose model.ckpt (train.sample_check).
VALIDATION_MD = expand("results/md/{peptide}", peptide=ROLES.val)


rule train:
    input:
        expand("results/shards/{split}/manifest.csv", split=SPLITS),
        stats="results/shards/train/stats.json",
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
        ),
        summary="results/train/train.json",
    params:
        train=settings("train"),
        launcher=train_launcher(),
        validation_md=f"--validation-md {' '.join(VALIDATION_MD)}" if VALIDATION_MD else "",
    conda:
        "../../envs/torch.yaml"
    log:
        "results/logs/train/train.log",
    benchmark:
        "results/benchmarks/train/train.tsv"
    threads: workflow.cores if config["train"]["gpus"] > 0 else 1
    resources:
        gpu=config["train"]["gpus"],
        mem_mb=16000,
        runtime=24 * 60,
    shell:
        "{params.launcher} train --shards results/shards -o results/train "
        "--threads {threads} --settings {params.train:q} {params.validation_md} > {log} 2>&1"
