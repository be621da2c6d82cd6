# Evaluation against MD (reference run + independent replicate) and the cross-peptide summary.


rule evaluate:
    input:
        reference="results/md/{peptide}/traj.xtc",
        reference_meta="results/md/{peptide}/md.json",
        reference_topology="results/md/{peptide}/topology.pdb",
        replicate="results/md/{peptide}/replicate/traj.xtc",
        replicate_meta="results/md/{peptide}/replicate/md.json",
        samples="results/samples/{peptide}/samples.xtc",
        samples_meta="results/samples/{peptide}/sample.json",
        samples_topology="results/samples/{peptide}/topology.pdb",
    output:
        metrics="results/evaluate/{peptide}/metrics.json",
        ramachandran=report(
            "results/evaluate/{peptide}/ramachandran.png",
            caption="../report/ramachandran.rst",
            category="Ramachandran",
            subcategory=role_subcategory,
            labels=peptide_labels("Ramachandran maps: MD, JAMUN, MD of equal time"),
        ),
        jsd_vs_time=report(
            "results/evaluate/{peptide}/jsd_vs_time.png",
            caption="../report/jsd_vs_time.rst",
            category="JSD vs wall time",
            subcategory=role_subcategory,
            labels=peptide_labels("JSD against the reference MD vs wall time"),
        ),
        msm=report(
            "results/evaluate/{peptide}/msm.png",
            caption="../report/msm.rst",
            category="Markov state models",
            subcategory=role_subcategory,
            labels=peptide_labels("TICA map and macrostate populations"),
        ),
        its=report(
            "results/evaluate/{peptide}/its.png",
            caption="../report/its.rst",
            category="Implied timescales",
            subcategory=role_subcategory,
            labels=peptide_labels("implied timescales of the reference MD"),
        ),
    log:
        "results/logs/evaluate/{peptide}.log",
    benchmark:
        "results/benchmarks/evaluate/{peptide}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        evaluate=settings("evaluate"),
        role=lambda wc: ROLES.role(wc.peptide),
    shell:
        "jamun evaluate {wildcards.peptide} "
        "--reference {input.reference} {input.reference_meta} {input.reference_topology} "
        "--replicate {input.replicate} {input.replicate_meta} "
        "--samples {input.samples} {input.samples_meta} {input.samples_topology} "
        "-o results/evaluate/{wildcards.peptide} --role {params.role} "
        "--settings {params.evaluate:q} > {log} 2>&1"


rule summarize:
    input:
        expand("results/evaluate/{peptide}/metrics.json", peptide=ROLES.evaluated),
    output:
        reader_table=report(
            "results/summary/metrics.html",
            caption="../report/metrics_reader.rst",
            category="Summary",
            labels=summary_labels("per-peptide headline numbers (table)"),
        ),
        table=report(
            "results/summary/metrics.csv",
            caption="../report/metrics_table.rst",
            category="Summary",
            labels=summary_labels("metrics of every evaluated peptide (table)"),
        ),
        figure=report(
            "results/summary/summary.png",
            caption="../report/summary.rst",
            category="Summary",
            labels=summary_labels("JSD per peptide: JAMUN, MD of equal time, floor"),
        ),
    log:
        "results/logs/summarize/summarize.log",
    conda:
        "../../envs/analysis.yaml"
    shell:
        "jamun summarize {input} -o results/summary > {log} 2>&1"


# The whole config and the package versions, next to the summary it describes (rerun with it).
rule provenance:
    input:
        "results/summary/metrics.csv",
    output:
        report(
            "results/summary/provenance.txt",
            caption="../report/provenance.rst",
            category="Summary",
            labels=summary_labels("configuration and package versions", "all", "all"),
        ),
    log:
        "results/logs/provenance/provenance.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=json.dumps(config, sort_keys=True),
    shell:
        "jamun provenance -o {output} --settings {params.config:q} > {log} 2>&1"


# Seconds of work that would wait minutes in a cluster queue: run on the submitting node.
localrules:
    build,
    summarize,
    provenance,
