# A second model next to the workflow's own (config `pretrained_model`: a shipped model's name or a
# checkpoint path): the held-out test peptides are sampled with it, with the same sample settings,
# evaluated against the same MD, and both models compared in one table and figure. With
# `pretrained_model: null` none of these rules exist.

if PRETRAINED is not None:
    # A shipped model is no file Snakemake tracks, so its sha256 is a param: a newly shipped model
    # reruns sampling and what follows (an unloadable one is warned about, and its jobs fail).
    from jamun.model.pretrained import model_fingerprint

    PRETRAINED_SHA256 = model_fingerprint(PRETRAINED)

    rule sample_pretrained:
        input:
            system="results/md/{peptide}/system.pdb",
        output:
            samples="results/pretrained/samples/{peptide}/samples.xtc",
            topology="results/pretrained/samples/{peptide}/topology.pdb",
            meta="results/pretrained/samples/{peptide}/sample.json",
        log:
            "results/logs/sample_pretrained/{peptide}.log",
        benchmark:
            "results/benchmarks/sample_pretrained/{peptide}.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            gpu=SAMPLE_GPUS,
            mem_mb=8000,
            runtime=12 * 60,
        params:
            model=PRETRAINED,
            model_sha256=PRETRAINED_SHA256,
            sample=settings("sample"),
        shell:
            "jamun sample {wildcards.peptide} --model {params.model:q} --system {input.system} "
            "-o results/pretrained/samples/{wildcards.peptide} --settings {params.sample:q} "
            "> {log} 2>&1"

    rule evaluate_pretrained:
        input:
            reference="results/md/{peptide}/traj.xtc",
            reference_meta="results/md/{peptide}/md.json",
            reference_topology="results/md/{peptide}/topology.pdb",
            replicate="results/md/{peptide}/replicate/traj.xtc",
            replicate_meta="results/md/{peptide}/replicate/md.json",
            samples="results/pretrained/samples/{peptide}/samples.xtc",
            samples_meta="results/pretrained/samples/{peptide}/sample.json",
            samples_topology="results/pretrained/samples/{peptide}/topology.pdb",
        output:
            metrics="results/pretrained/evaluate/{peptide}/metrics.json",
            ramachandran=report(
                "results/pretrained/evaluate/{peptide}/ramachandran.png",
                caption="../report/pretrained_ramachandran.rst",
                category="Ramachandran (shipped model)",
                subcategory=role_subcategory,
                labels=peptide_labels("Ramachandran maps: MD, shipped model, MD of equal time"),
            ),
            jsd_vs_time=report(
                "results/pretrained/evaluate/{peptide}/jsd_vs_time.png",
                caption="../report/pretrained_jsd_vs_time.rst",
                category="JSD vs wall time (shipped model)",
                subcategory=role_subcategory,
                labels=peptide_labels("JSD against the reference MD vs wall time"),
            ),
            msm=report(
                "results/pretrained/evaluate/{peptide}/msm.png",
                caption="../report/pretrained_msm.rst",
                category="Markov state models (shipped model)",
                subcategory=role_subcategory,
                labels=peptide_labels("TICA map and macrostate populations"),
            ),
            # The reference MD's implied timescales, the same figure as in the report's
            # "Implied timescales" (samples have no kinetics): not in the report twice.
            its="results/pretrained/evaluate/{peptide}/its.png",
        log:
            "results/logs/evaluate_pretrained/{peptide}.log",
        benchmark:
            "results/benchmarks/evaluate_pretrained/{peptide}.tsv"
        conda:
            "../../envs/analysis.yaml"
        threads: 1
        resources:
            mem_mb=8000,
            runtime=120,
        params:
            evaluate=settings("evaluate"),
        shell:
            "jamun evaluate {wildcards.peptide} "
            "--reference {input.reference} {input.reference_meta} {input.reference_topology} "
            "--replicate {input.replicate} {input.replicate_meta} "
            "--samples {input.samples} {input.samples_meta} {input.samples_topology} "
            "-o results/pretrained/evaluate/{wildcards.peptide} --role test "
            "--settings {params.evaluate:q} > {log} 2>&1"

    rule compare_models:
        input:
            workflow_model="results/train/model.ckpt",
            workflow=expand("results/evaluate/{peptide}/metrics.json", peptide=ROLES.test),
            pretrained=expand(
                "results/pretrained/evaluate/{peptide}/metrics.json", peptide=ROLES.test
            ),
        output:
            table=report(
                "results/summary/models.csv",
                caption="../report/models_table.rst",
                category="Summary",
                labels=summary_labels(
                    "both models per test peptide (table)", "test peptides", "test"
                ),
            ),
            figure=report(
                "results/summary/models.png",
                caption="../report/models.rst",
                category="Summary",
                labels=summary_labels("both models: JSD and validity", "test peptides", "test"),
            ),
        log:
            "results/logs/compare_models/compare_models.log",
        # torch: the labels come from the checkpoints' training records.
        conda:
            "../../envs/torch.yaml"
        threads: 1
        params:
            model=PRETRAINED,
            model_sha256=PRETRAINED_SHA256,
            peptides=" ".join(ROLES.test),
        shell:
            "jamun compare --model {input.workflow_model} results/evaluate 'workflow model' "
            "--model {params.model:q} results/pretrained/evaluate "
            "--peptides {params.peptides} -o results/summary > {log} 2>&1"

    localrules:
        compare_models,
