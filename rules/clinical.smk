# Clinical readouts per subject and method (rCBV, rCBF, stroke volumes and the
# target-mismatch decision, tumour rCBV), the cohort's clinical.tsv and their agreement
# with the reference (bolus.evaluate.clinical). Not a stage of the qc chain: a subject whose
# readouts fail keeps its place in the study tables, with its own verdict and reason.


include: "clinical_common.smk"


rule clinical:
    input:
        row_files(
            "reference_dir", "lesion_mask", "tissue_labels", "reference_region_mask"
        ),
        previous=verdict("{subject}", "perfusion"),
        maps=SVD_VERDICTS,
        predictions=PREDICTION_VERDICTS,
        tof_predictions=tof_prediction_verdicts,
    output:
        verdict=verdict("{subject}", paths.CLINICAL_VERDICT),
        figure=str(
            paths.subject_figure(OUT, "{subject}", paths.CLINICAL_SUBJECT_FIGURE)
        ),
    log:
        logfile("{subject}", "clinical"),
    benchmark:
        benchmark("{subject}", "clinical")
    conda:
        "../envs/clinical.yaml"
    params:
        row=columns(
            "reference_dir",
            "lesion_mask",
            "tissue_labels",
            "reference_region_mask",
            "lesion_side",
        ),
        clinical=config["clinical"],
        reference=config["reference"],
        methods=evaluated_methods(),
    script:
        "../scripts/clinical.py"


# The clinical figure embedded in the HTML report for the first report.embedded_subjects
# subjects (rules/report.smk).
use rule clinical as clinical_in_report with:
    output:
        verdict=embedded(verdict("{subject}", paths.CLINICAL_VERDICT)),
        figure=report(
            embedded_subject_figure(paths.CLINICAL_SUBJECT_FIGURE),
            caption="../report/clinical_subject.rst",
            category="Subjects",
            subcategory="{subject}",
            labels={"subject": "{subject}", "figure": "clinical readouts"},
        ),


ruleorder: clinical_in_report > clinical


rule clinical_study:
    input:
        verdicts=[verdict(s, paths.CLINICAL_VERDICT) for s in SUBJECTS],
        metrics=[verdict(s, "metrics") for s in SUBJECTS],
    output:
        table=str(paths.clinical_table(OUT)),
        agreement=str(paths.clinical_agreement(OUT)),
        figure=report(
            str(paths.study_figure(OUT, paths.CLINICAL_STUDY_FIGURE)),
            caption="../report/clinical_bland_altman.rst",
            category="Study",
            subcategory="Clinical readouts",
            labels={"figure": "clinical Bland–Altman"},
        ),
    log:
        str(paths.cohort_log(OUT, "clinical_study")),
    conda:
        "../envs/clinical.yaml"
    params:
        clinical=config["clinical"],
        reference=config["reference"],
        subjects=SUBJECTS,
    script:
        "../scripts/clinical_study.py"


rule clinical_report_table:
    input:
        table=str(paths.clinical_table(OUT)),
        agreement=str(paths.clinical_agreement(OUT)),
    output:
        html=report(
            str(paths.report_table(OUT, "clinical")),
            caption="../report/clinical_table.rst",
            category="Tables",
            labels={"table": "clinical readouts"},
        ),
    log:
        str(paths.cohort_log(OUT, "clinical_report_table")),
    conda:
        "../envs/report.yaml"
    params:
        clinical=config["clinical"],
    script:
        "../scripts/clinical_report.py"
