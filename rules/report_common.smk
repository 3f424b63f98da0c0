# Path helpers of the report rules (rules/report.smk).


def subject_figure(subject, kind):
    return str(paths.subject_figure(OUT, subject, kind))


def embedded_subjects():
    """The subjects whose figures the HTML report embeds: the first
    report.embedded_subjects of participants.tsv (every subject when null)."""
    n = config["report"]["embedded_subjects"]
    return list(SUBJECTS) if n is None else list(SUBJECTS)[:n]


def embedded(path):
    """``path`` with its first ``{subject}`` restricted to embedded_subjects() (a regex that
    matches nothing when there are none)."""
    import re

    names = "|".join(re.escape(s) for s in embedded_subjects()) or "(?!)"
    return path.replace("{subject}", "{subject,%s}" % names, 1)


def embedded_subject_figure(kind):
    """subject_figure("{subject}", kind) for the embedded subjects only."""
    return embedded(subject_figure("{subject}", kind))


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
