# Every method against the reference, per subject; then the study tables and qc.tsv.


rule subject_metrics:
    input:
        row_files("reference_dir", "lesion_mask", "tissue_labels"),
        previous=verdict("{subject}", "perfusion"),
        maps=SVD_VERDICTS,
        predictions=PREDICTION_VERDICTS,
        tof_predictions=tof_prediction_verdicts,
    output:
        verdict=verdict("{subject}", "metrics"),
    log:
        logfile("{subject}", "metrics"),
    benchmark:
        benchmark("{subject}", "metrics")
    conda:
        "../envs/metrics.yaml"
    params:
        row=columns("reference_dir", "lesion_mask", "tissue_labels"),
        methods=evaluated_methods(),
        reference=config["reference"],
        registration=config["reference_registration"],
        lesion=config["lesion"],
    script:
        "../scripts/subject_metrics.py"


rule study:
    input:
        verdicts=[verdict(s, "metrics") for s in SUBJECTS],
        models=[str(paths.model_verdict(OUT, m)) for m in MODELS],
        clinical=lambda wc: clinical_study_outputs(),
    output:
        subjects=str(paths.subjects_table(OUT)),
        study=str(paths.study_table(OUT)),
        markdown=str(paths.study_markdown(OUT)),
        qc=str(paths.qc_table(OUT)),
        paired=str(paths.paired_table(OUT)),
        excluded=str(paths.excluded_table(OUT)),
    log:
        str(paths.cohort_log(OUT, "study")),
    conda:
        "../envs/metrics.yaml"
    params:
        participants=config["participants"],
        rows=lambda wc: [ROWS[s] for s in SUBJECTS],  # strata and splits: a row edit reruns it
        subjects=SUBJECTS,
        seed=config["seed"],
        study=config["study"],
        models=MODELS,
        clinical=config["clinical"],
    script:
        "../scripts/study.py"
