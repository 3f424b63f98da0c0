# Every method against the reference, per subject; then the study tables and qc.tsv.


rule subject_metrics:
    input:
        previous=verdict("{subject}", "perfusion"),
        predictions=lambda wc: prediction_verdicts(wc.subject),
    output:
        verdict=verdict("{subject}", "metrics"),
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
        mask=sp("{subject}", "brain_mask"),
        metrics=sp("{subject}", "metrics_tsv"),
    script:
        "../scripts/subject_metrics.py"


rule study:
    input:
        verdicts=lambda wc: final_verdicts(),
        clinical=lambda wc: clinical_study_outputs(),
    output:
        subjects=str(paths.subjects_table(OUT)),
        study=str(paths.study_table(OUT)),
        markdown=str(paths.study_markdown(OUT)),
        qc=str(paths.qc_table(OUT)),
        paired=str(paths.paired_table(OUT)),
        excluded=str(paths.excluded_table(OUT)),
    log:
        f"{OUT}/logs/study.log",
    conda:
        "../envs/metrics.yaml"
    params:
        participants=config["participants"],
        subjects=SUBJECTS,
        seed=config["seed"],
        config=config,
        clinical=config["clinical"],
        output_dir=lambda wildcards, output: str(Path(output.qc).parent),
    script:
        "../scripts/study.py"
