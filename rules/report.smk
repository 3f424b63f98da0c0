# Figures and HTML tables for the Snakemake report (snakemake --report results/report.html).


include: "report_common.smk"


report: "../report/workflow.rst"


rule subject_figures:
    input:
        row_files("reference_dir"),
        previous=verdict("{subject}", "metrics"),
    output:
        montage=subject_figure("{subject}", "montage"),
        aif=subject_figure("{subject}", "aif"),
        motion=subject_figure("{subject}", "motion"),
    log:
        logfile("{subject}", "figures"),
    benchmark:
        benchmark("{subject}", "figures")
    conda:
        "../envs/report.yaml"
    params:
        row=columns("reference_dir"),
        methods=evaluated_methods(),
        reference=config["reference"],
        registration=config["reference_registration"],
        lesion=config["lesion"],
        modality=config["modality"],
    script:
        "../scripts/subject_figures.py"


# The same figures, embedded in the HTML report, for the first report.embedded_subjects
# subjects only (the others are written, not embedded: the report stays a few MB at any
# cohort size).
use rule subject_figures as subject_figures_in_report with:
    output:
        montage=report(
            embedded_subject_figure("montage"),
            caption="../report/montage.rst",
            category="Subjects",
            subcategory="{subject}",
            labels={"subject": "{subject}", "figure": "maps vs reference"},
        ),
        aif=report(
            embedded_subject_figure("aif"),
            caption="../report/aif.rst",
            category="Subjects",
            subcategory="{subject}",
            labels={"subject": "{subject}", "figure": "AIF"},
        ),
        motion=report(
            embedded_subject_figure("motion"),
            caption="../report/motion.rst",
            category="Subjects",
            subcategory="{subject}",
            labels={"subject": "{subject}", "figure": "motion"},
        ),


ruleorder: subject_figures_in_report > subject_figures


rule study_figures:
    input:
        subjects=str(paths.subjects_table(OUT)),
    output:
        **{
            name: report(
                str(paths.study_figure(OUT, name)),
                caption=study_caption(name),
                category="Study",
                subcategory=(
                    "Box plots" if name.startswith("boxplot") else "Regional means"
                ),
                labels={"figure": name.replace("_", " ")},
            )
            for name in paths.STUDY_FIGURES
        },
    log:
        str(paths.cohort_log(OUT, "study_figures")),
    conda:
        "../envs/report.yaml"
    params:
        models=MODELS,
        scope=config["study"]["subjects"],
    script:
        "../scripts/study_figures.py"


rule report_tables:
    input:
        study=str(paths.study_table(OUT)),
        paired=str(paths.paired_table(OUT)),
        qc=str(paths.qc_table(OUT)),
        subjects=str(paths.subjects_table(OUT)),
    output:
        study=report(
            str(paths.report_table(OUT, "study")),
            caption="../report/study_table.rst",
            category="Tables",
            labels={"table": "study metrics"},
        ),
        paired=report(
            str(paths.report_table(OUT, "paired")),
            caption="../report/paired_table.rst",
            category="Tables",
            labels={"table": "paired comparison"},
        ),
        excluded=report(
            str(paths.report_table(OUT, "excluded")),
            caption="../report/excluded_table.rst",
            category="Tables",
            labels={"table": "excluded subjects"},
        ),
    log:
        str(paths.cohort_log(OUT, "report_tables")),
    conda:
        "../envs/report.yaml"
    params:
        models=MODELS,
        scope=config["study"]["subjects"],
    script:
        "../scripts/report_tables.py"
