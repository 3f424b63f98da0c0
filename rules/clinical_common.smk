# Path helpers of the clinical rules (rules/clinical.smk).


def clinical_study_outputs():
    """metrics/clinical.tsv and clinical_agreement.tsv ([] with clinical.enabled false)."""
    if not config["clinical"]["enabled"]:
        return []
    return [str(paths.clinical_table(OUT)), str(paths.clinical_agreement(OUT))]


def clinical_targets():
    """Every clinical output rule all asks for ([] with clinical.enabled false)."""
    if not config["clinical"]["enabled"]:
        return []
    return (
        clinical_study_outputs()
        + [
            str(paths.report_table(OUT, "clinical")),
            str(paths.study_figure(OUT, paths.CLINICAL_STUDY_FIGURE)),
        ]
        + [
            str(paths.subject_figure(OUT, s, paths.CLINICAL_SUBJECT_FIGURE))
            for s in SUBJECTS
        ]
    )
