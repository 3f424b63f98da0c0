"""The file layer of the report rules: figures and HTML tables from the workflow's files.

* :func:`subject_figures` — montage, AIF and motion QC of one subject;
* :func:`study_figures` — box plots, Bland–Altman and scatter plots from ``subjects.tsv``;
* :func:`report_tables` — HTML renderings of ``study.tsv``, ``paired.tsv`` and the excluded
  subjects (Snakemake's report shows HTML in place; TSV would only be a download).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from bolus import paths
from bolus.config import section


def _reference_aif(reference_dir) -> tuple[np.ndarray, np.ndarray] | None:
    """The reference AIF (``aif.tsv``: time, concentration) of a reference_dir, if any."""
    if not reference_dir:
        return None
    path = Path(reference_dir) / "aif.tsv"
    if not path.exists():
        return None
    table = pd.read_csv(path, sep="\t")
    if not {"time", "concentration"} <= set(table.columns):
        return None
    return table["time"].to_numpy(float), table["concentration"].to_numpy(float)


def subject_figures(
    subject: paths.SubjectPaths,
    methods,
    out_montage,
    out_aif,
    out_motion,
    *,
    reference: str | None = None,
    registration: bool = False,
    lesion: dict | None = None,
    modality: str | None = None,
    reference_dir=None,
) -> list[Path]:
    """Montage of every method's maps against the reference, AIF and motion QC plots.

    The reference and the brain are the metrics' (:func:`bolus.evaluate.reference.
    subject_reference`: config ``reference``, ``reference_registration``), so the montage
    shows what the metrics scored. With ``reference_dir``, its ``aif.tsv`` (if any) is drawn
    with the automatic AIF.
    """
    from bolus.evaluate.figures import aif_figure, montage, motion_figure
    from bolus.evaluate.lesions import hypoperfusion_mask
    from bolus.evaluate.reference import method_maps, subject_reference
    from bolus.io.nifti import load_volume
    from bolus.io.tables import read_aif_table

    reference = section("reference", reference)
    pid = subject.pid
    mask, affine = load_volume(subject.brain_mask)
    predictions = method_maps(subject, methods)
    reference_maps, brain = subject_reference(
        subject, mask > 0, affine, predictions, reference=reference,
        reference_dir=reference_dir, registration=registration, min_coverage=None,
    )  # fmt: skip
    lesion_mask = None
    if "tmax" in reference_maps:
        threshold = section("lesion", lesion)["tmax_threshold_s"]
        lesion_mask = hypoperfusion_mask(reference_maps["tmax"], brain, threshold)
    written = [
        montage(
            out_montage,
            reference_maps,
            predictions,
            brain,
            lesion_mask,
            title=f"{pid}: maps against the reference ({reference})",
        )
    ]
    times, curve = read_aif_table(subject.aif_tsv)
    header = subject.aif_tsv.read_text().split("\n", 1)[0].split("\t")
    vof = read_aif_table(subject.aif_tsv, "vof")[1] if "vof" in header else None
    ylabel = "ΔHU" if section("modality", modality) == "ctp" else "ΔR2* (1/s)"
    written.append(
        aif_figure(
            out_aif,
            times,
            curve,
            reference=_reference_aif(reference_dir) if reference == "reference_dir" else None,
            title=f"{pid}: arterial input function",
            ylabel=ylabel,
            vof=vof,
        )
    )
    motion = pd.read_csv(subject.motion_tsv, sep="\t")
    written.append(motion_figure(out_motion, motion, title=f"{pid}: head motion"))
    return written


def subject_figures_after(verdict_path, subject: paths.SubjectPaths, methods, *outs, **kwargs):
    """:func:`subject_figures` when the subject's last stage (``verdict_path``) succeeded;
    otherwise each figure is a notice naming the stage that failed and why (so an excluded
    subject still has its place, and its reason, in the report)."""
    from bolus.evaluate.figures import notice_figure
    from bolus.qc import read_verdict, subject_chain

    if read_verdict(verdict_path).get("status") == "ok":
        return subject_figures(subject, methods, *outs, **kwargs)
    last = (subject_chain(subject.root, subject.pid) or [{}])[-1]
    reason = f"{last.get('stage', '?')} {last.get('status', 'missing')}: {last.get('reason', '')}"
    return [notice_figure(o, f"{subject.pid}: excluded", reason) for o in outs]


def _scored(subjects_tsv, models=(), scope=None):
    """``subjects.tsv``'s rows the study tables score (config ``models`` and
    ``study.subjects``: see :func:`bolus.evaluate.aggregate.study_scope`), and that scope."""
    from bolus.evaluate.aggregate import read_subject_tables, scored_subjects, study_scope

    subjects = read_subject_tables([subjects_tsv])
    scope = study_scope(subjects, list(models), scope)
    return scored_subjects(subjects, scope), scope


def study_figures(subjects_tsv, output_dir, models=(), scope=None) -> dict[str, Path]:
    """Every study figure (:data:`bolus.paths.STUDY_FIGURES`) from ``subjects.tsv``, over
    the subjects the study tables score (with learned ``models``, the held-out test subjects
    unless ``scope``, config ``study.subjects``, is ``all``)."""
    from bolus.evaluate.figures import study_figures as draw

    subjects, _ = _scored(subjects_tsv, models, scope)
    return draw(subjects, output_dir)


# ----------------------------------------------------------------------------- tables

_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; }
th { background: #f2f2f2; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else f"{value:.4g}"
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "n/a"
    return html.escape(str(value))


def html_table(table: pd.DataFrame) -> str:
    """A plain HTML table (numbers right-aligned, 4 significant digits, n/a for missing)."""
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for row in table.itertuples(index=False):
        cells = "".join(
            f'<td class="num">{_cell(v)}</td>' if num else f"<td>{_cell(v)}</td>"
            for v, num in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_page(title: str, intro: str, table: pd.DataFrame) -> str:
    content = html_table(table) if len(table) else "<p>None.</p>"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(intro)}</p>{content}</body></html>\n"
    )


def _write(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def report_tables(
    study_tsv,
    paired_tsv,
    qc_tsv,
    subjects_tsv,
    out_study,
    out_paired,
    out_excluded,
    models=(),
    scope=None,
) -> list[Path]:
    """HTML versions of the study table, the paired comparison and the excluded subjects;
    the first two say which subjects they score (config ``models``, ``study.subjects``)."""
    from bolus.evaluate.aggregate import excluded_subjects

    read = {"sep": "\t", "na_values": ["n/a"], "keep_default_na": False}
    study = pd.read_csv(study_tsv, **read)
    paired = pd.read_csv(paired_tsv, **read)
    _, scope = _scored(subjects_tsv, models, scope)
    included = pd.read_csv(subjects_tsv, sep="\t", usecols=["participant_id"], dtype=str)
    excluded = excluded_subjects(qc_tsv, included["participant_id"].unique())
    said = scope.warning or scope.note
    said = " " + said.replace("**", "").replace("`", "") if said else ""
    return [
        _write(
            out_study,
            html_page(
                "Study metrics",
                "Every method against the reference over subjects: n, mean, SD, median, "
                "quartiles; the whole cohort first, then each stratum. SSIM and PSNR use one "
                "data range per map and subject in every region: the reference's max − min "
                "over the brain." + said,
                study,
            ),
        ),
        _write(
            out_paired,
            html_page(
                "Paired comparison with the baseline",
                "Method − baseline per subject: medians, median paired difference, Wilcoxon "
                "signed-rank p and Holm-corrected p (within each map × region × metric)." + said,
                paired,
            ),
        ),
        _write(
            out_excluded,
            html_page(
                "Excluded subjects",
                "Subjects without metrics, with the stage and reason from qc.tsv.",
                excluded,
            ),
        ),
    ]
