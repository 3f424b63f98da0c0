# Every method against the reference, per subject; then the study tables and qc.tsv.


rule subject_metrics:
    input:
        maps=subject_maps("{subject}", config["svd"]["methods"]),
        model_maps=model_outputs("{subject}"),
        mask=sp("{subject}", "brain_mask"),
    output:
        sp("{subject}", "metrics_tsv"),
    log:
        logfile("{subject}", "metrics"),
    benchmark:
        benchmark("{subject}", "metrics")
    conda:
        "../envs/metrics.yaml"
    params:
        row=row,
        prefix=lambda wc: str(Path(OUT) / wc.subject / "perf" / wc.subject),
        methods=config["svd"]["methods"] + config["models"],
        config=config,
    script:
        "../scripts/subject_metrics.py"


rule study:
    input:
        inspections=[inspection(s) for s in SUBJECTS],
        metrics=lambda wc: [sp(s, "metrics_tsv") for s in usable_subjects()],
    output:
        subjects=str(paths.subjects_table(OUT)),
        study=str(paths.study_table(OUT)),
        markdown=str(paths.study_markdown(OUT)),
        qc=str(paths.qc_table(OUT)),
    log:
        f"{OUT}/logs/study.log",
    conda:
        "../envs/metrics.yaml"
    params:
        participants=config["participants"],
        seed=config["seed"],
        output_dir=lambda wildcards, output: str(Path(output.qc).parent),
    script:
        "../scripts/study.py"
