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
from bolus.config import with_defaults
from bolus.io.errors import SubjectError


def _method_maps(map_prefix, methods) -> dict[str, dict[str, np.ndarray]]:
    """Every map on disk of every method (methods with no map left out)."""
    from bolus.io.nifti import load_volume

    found = {}
    for method in methods:
        maps = {
            name: load_volume(path)[0]
            for name in paths.MAPS
            if (path := paths.map_prefix(map_prefix, method, name)).exists()
        }
        if maps:
            found[method] = maps
    return found


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
    participant_id: str,
    map_prefix,
    methods,
    mask_path,
    aif_tsv,
    motion_tsv,
    out_montage,
    out_aif,
    out_motion,
    *,
    reference_dir=None,
    config=None,
) -> list[Path]:
    """Montage of every method's maps against the reference, AIF and motion QC plots.

    The reference is config ``reference``: the ``reference_dir`` maps (resampled onto the
    DSC grid) or a named method's maps; the brain is the mask where the reference is
    defined, as in the metrics. With ``reference_dir``, its ``aif.tsv`` (if any) is drawn
    with the automatic AIF.
    """
    from bolus.evaluate.figures import aif_figure, montage, motion_figure
    from bolus.evaluate.lesions import hypoperfusion_mask
    from bolus.io.nifti import load_volume
    from bolus.stages import load_reference_maps, read_aif_table

    config = with_defaults(config)
    mask, affine = load_volume(mask_path)
    brain = mask > 0
    predictions = _method_maps(map_prefix, methods)
    if config["reference"] == "reference_dir":
        if not reference_dir:
            raise SubjectError(
                participant_id, None, "config reference=reference_dir but no reference_dir"
            )
        reference = load_reference_maps(reference_dir, brain.shape, affine)
    else:
        reference = predictions.pop(config["reference"], {})
    if reference:
        brain &= np.logical_and.reduce([np.isfinite(r) for r in reference.values()])
    lesion = None
    if "tmax" in reference:
        lesion = hypoperfusion_mask(reference["tmax"], brain, config["lesion"]["tmax_threshold_s"])
    written = [
        montage(
            out_montage,
            reference,
            predictions,
            brain,
            lesion,
            title=f"{participant_id}: maps against the reference ({config['reference']})",
        )
    ]
    times, curve = read_aif_table(aif_tsv)
    aif_columns = pd.read_csv(aif_tsv, sep="\t")
    vof = aif_columns["vof"].to_numpy(float) if "vof" in aif_columns else None
    ylabel = "ΔHU" if config["modality"] == "ctp" else "ΔR2* (1/s)"
    written.append(
        aif_figure(
            out_aif,
            times,
            curve,
            reference=_reference_aif(reference_dir)
            if config["reference"] == "reference_dir"
            else None,
            title=f"{participant_id}: arterial input function",
            ylabel=ylabel,
            vof=vof,
        )
    )
    motion = pd.read_csv(motion_tsv, sep="\t")
    written.append(motion_figure(out_motion, motion, title=f"{participant_id}: head motion"))
    return written


def subject_figures_after(verdict_path, participant_id: str, *args, **kwargs) -> list[Path]:
    """:func:`subject_figures` when the subject's last stage (``verdict_path``) succeeded;
    otherwise each figure is a notice naming the stage that failed and why (so an excluded
    subject still has its place, and its reason, in the report)."""
    from bolus.evaluate.figures import notice_figure
    from bolus.qc import read_verdict, subject_chain

    if read_verdict(verdict_path).get("status") == "ok":
        return subject_figures(participant_id, *args, **kwargs)
    output_dir = Path(verdict_path).parent.parent
    last = (subject_chain(output_dir, participant_id) or [{}])[-1]
    reason = f"{last.get('stage', '?')} {last.get('status', 'missing')}: {last.get('reason', '')}"
    outs = args[-3:]  # montage, aif, motion
    return [notice_figure(o, f"{participant_id}: excluded", reason) for o in outs]


def _scored(subjects_tsv, config):
    """``subjects.tsv``'s rows the study tables score (config ``models`` and
    ``study.subjects``: see :func:`bolus.evaluate.aggregate.study_scope`), and that scope."""
    from bolus.evaluate.aggregate import read_subject_tables, scored_subjects, study_scope

    config = with_defaults(config)
    subjects = read_subject_tables([subjects_tsv])
    scope = study_scope(subjects, config["models"], config["study"]["subjects"])
    return scored_subjects(subjects, scope), scope


def study_figures(subjects_tsv, output_dir, config=None) -> dict[str, Path]:
    """Every study figure (:data:`bolus.paths.STUDY_FIGURES`) from ``subjects.tsv``, over
    the subjects the study tables score (with learned models, the held-out test subjects
    unless config ``study.subjects`` is ``all``)."""
    from bolus.evaluate.figures import study_figures as draw

    subjects, _ = _scored(subjects_tsv, config)
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
    study_tsv, paired_tsv, qc_tsv, subjects_tsv, out_study, out_paired, out_excluded, config=None
) -> list[Path]:
    """HTML versions of the study table, the paired comparison and the excluded subjects;
    the first two say which subjects they score (config ``models``, ``study.subjects``)."""
    from bolus.evaluate.aggregate import excluded_subjects

    read = {"sep": "\t", "na_values": ["n/a"], "keep_default_na": False}
    study = pd.read_csv(study_tsv, **read)
    paired = pd.read_csv(paired_tsv, **read)
    _, scope = _scored(subjects_tsv, config)
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
