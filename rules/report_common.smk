# Path helpers of the report rules (rules/report.smk).


def subject_figure(subject, kind):
    return str(paths.subject_figure(OUT, subject, kind))


def subject_figure_targets(wildcards):
    """The per-subject figures of every subject (an excluded subject's say why)."""
    return [subject_figure(s, kind) for s in SUBJECTS for kind in paths.SUBJECT_FIGURES]


def study_caption(name):
    """The caption of a study figure: one for every metric's box plot, one per other figure."""
    if name.startswith("boxplot_") and name != "boxplot_lesion":
        return "../report/boxplot.rst"
    return f"../report/{name}.rst"


def report_outputs():
    return [str(paths.study_figure(OUT, name)) for name in paths.STUDY_FIGURES] + [
        str(paths.report_table(OUT, name)) for name in ("study", "paired", "excluded")
    ]
