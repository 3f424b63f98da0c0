"""Per-subject metric tables and their study-level aggregation.

Per subject, :func:`subject_metrics` builds a long table with the columns
``participant_id, method, map, region, metric, value``:

* region ``brain``: for every method and every map present in both the method's maps and
  the reference, ``mae rmse nrmse ssim psnr pcc`` (:func:`bolus.evaluate.metrics.map_metrics`)
  and ``finite_fraction`` (share of brain voxels where both maps are finite: the metrics
  are computed on those only);
* region ``lesion`` (only when the subject has a lesion): ``mae rmse nrmse pcc`` inside
  the lesion. The lesion is the given lesion mask (intersected with the brain) when
  there is one, else the reference's Tmax > threshold lesion;
* map ``tmax``, region ``brain``: ``dice iou hd95 volume_pred_ml volume_ref_ml`` of the
  Tmax > threshold lesions (:func:`bolus.evaluate.lesions.lesion_metrics`). These rows are
  always there, also when neither map has a lesion (Dice = IoU = 1, HD95 NaN), so every
  method × map × metric appears for every subject.

:func:`study_table` aggregates subjects into ``method, map, region, metric, n, mean, sd,
median, q1, q3`` (strata columns first when asked for). Statistics use the finite values
only: NaN and ±inf (PSNR of identical maps) are left out, and ``n`` counts the values
used. ``sd`` has ddof = 1; quartiles use numpy's default linear interpolation.

Tables are written as TSV (tab-separated, no index, ``%.6g`` floats, missing as ``n/a``
as in BIDS).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bolus import paths
from bolus.evaluate.lesions import default_tmax_threshold_s, hypoperfusion_mask, lesion_metrics
from bolus.evaluate.metrics import (
    METRIC_NAMES,
    as_mask,
    finite_fraction,
    mae,
    map_metrics,
    nrmse,
    pcc,
    rmse,
)
from bolus.io import atomic

SUBJECT_COLUMNS = ("participant_id", "method", "map", "region", "metric", "value")
STATISTICS = ("n", "mean", "sd", "median", "q1", "q3")
STUDY_COLUMNS = ("method", "map", "region", "metric") + STATISTICS
#: metrics of every map over the brain
BRAIN_METRICS = METRIC_NAMES + ("finite_fraction",)
#: metrics of every map inside the lesion (SSIM/PSNR need a box: brain only)
LESION_REGION_METRICS = ("mae", "rmse", "nrmse", "pcc")
#: lesion agreement metrics, rows of map ``tmax``, region ``brain``
LESION_METRICS = ("dice", "iou", "hd95", "volume_pred_ml", "volume_ref_ml")
MAP_UNITS = {
    "cbf": "ml/100 g/min",
    "cbv": "ml/100 g",
    "mtt": "s",
    "tmax": "s",
    "ttp": "s",
}
FLOAT_FORMAT = "%.6g"
NA_REP = "n/a"

_LESION_REGION_FUNCTIONS = {"mae": mae, "rmse": rmse, "nrmse": nrmse, "pcc": pcc}


def _ordered_maps(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [m for m in paths.MAPS if m in names] + sorted(names - set(paths.MAPS))


def lesion_region(
    reference_maps: Mapping[str, np.ndarray],
    brain_mask: np.ndarray,
    tmax_threshold_s: float | None = None,
    lesion_mask: np.ndarray | None = None,
) -> np.ndarray | None:
    """The region ``lesion`` of a subject: the given lesion mask inside the brain, else
    the reference's Tmax > threshold lesion; None when neither is available."""
    brain = as_mask(brain_mask)
    if lesion_mask is not None:
        lesion = as_mask(lesion_mask)
        if lesion.shape != brain.shape:
            raise ValueError(
                f"lesion mask {lesion.shape} and brain mask {brain.shape} differ in shape; "
                "resample the lesion mask onto the DSC grid first (order=0)"
            )
        return lesion & brain
    if "tmax" in reference_maps:
        return hypoperfusion_mask(reference_maps["tmax"], brain, tmax_threshold_s)
    return None


def subject_metrics(
    participant_id: str,
    method_maps: Mapping[str, Mapping[str, np.ndarray]],
    reference_maps: Mapping[str, np.ndarray],
    brain_mask: np.ndarray,
    spacing_mm: Sequence[float],
    tmax_threshold_s: float | None = None,
    lesion_mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Long table of every metric of every method's maps against the reference.

    Parameters
    ----------
    participant_id : ``sub-<label>``
    method_maps : ``{method: {map: array}}``, all on the brain mask's grid
    reference_maps : ``{map: array}`` on the same grid
    brain_mask : the subject's brain mask (region ``brain``)
    spacing_mm : voxel size, for HD95 and lesion volumes
    tmax_threshold_s : lesion threshold; None takes the config default (6 s)
    lesion_mask : optional lesion mask on the same grid (region ``lesion``)

    Returns the columns :data:`SUBJECT_COLUMNS`; see the module docstring for the rows.
    """
    if tmax_threshold_s is None:
        tmax_threshold_s = default_tmax_threshold_s()
    brain = as_mask(brain_mask)
    lesion = lesion_region(reference_maps, brain, tmax_threshold_s, lesion_mask)
    has_lesion = lesion is not None and bool(lesion.any())

    rows: list[tuple] = []
    for method, maps in method_maps.items():
        for name in _ordered_maps(set(maps) & set(reference_maps)):
            pred, ref = maps[name], reference_maps[name]
            where = f"{participant_id}, method {method}, map {name}"
            if np.shape(pred) != brain.shape or np.shape(ref) != brain.shape:
                raise ValueError(
                    f"{where}: shapes differ (prediction {np.shape(pred)}, reference "
                    f"{np.shape(ref)}, brain mask {brain.shape}); resample onto the DSC grid first"
                )
            values = map_metrics(pred, ref, brain)
            values["finite_fraction"] = finite_fraction(pred, ref, brain)
            rows += [(participant_id, method, name, "brain", k, values[k]) for k in BRAIN_METRICS]
            if has_lesion:
                rows += [
                    (participant_id, method, name, "lesion", k, f(pred, ref, lesion))
                    for k, f in _LESION_REGION_FUNCTIONS.items()
                ]
            if name == "tmax":
                overlap = lesion_metrics(pred, ref, brain, tmax_threshold_s, spacing_mm)
                rows += [
                    (participant_id, method, name, "brain", k, overlap[k]) for k in LESION_METRICS
                ]
    table = pd.DataFrame.from_records(rows, columns=list(SUBJECT_COLUMNS))
    table["value"] = table["value"].astype(np.float64)
    return table


# ----------------------------------------------------------------------------- tables


def write_tsv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as BIDS-style TSV (parent folders created)."""
    from bolus.io.atomic import write_table

    return write_table(path, table, float_format=FLOAT_FORMAT, na_rep=NA_REP)


def read_subject_tables(tables: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-subject metric TSVs (as written by :func:`write_tsv`)."""
    frames = [
        pd.read_csv(p, sep="\t", dtype={"participant_id": str, "method": str, "map": str})
        for p in tables
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype=float if c == "value" else str) for c in SUBJECT_COLUMNS}
        )
    table = pd.concat(frames, ignore_index=True)
    missing = [c for c in SUBJECT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"subject metric tables lack the columns {missing}")
    table = table[list(SUBJECT_COLUMNS)].copy()
    table["value"] = pd.to_numeric(table["value"], errors="coerce").astype(np.float64)
    return table


def _participants_frame(participants: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(participants, (str, Path)):
        return pd.read_csv(participants, sep="\t", dtype={"participant_id": str})
    frame = participants
    if "participant_id" not in frame.columns and frame.index.name == "participant_id":
        frame = frame.reset_index()
    return frame


ALL_SUBJECTS = "all"


def study_table(
    subjects: pd.DataFrame,
    participants: pd.DataFrame | str | Path | None = None,
    strata: Sequence[str] = (),
) -> pd.DataFrame:
    """Aggregate a long subject table over subjects.

    Columns: ``strata…, method, map, region, metric, n, mean, sd, median, q1, q3``.
    With strata, the first rows summarise the whole cohort (every stratum column reads
    ``all``), then come the rows of each stratum column in turn (the others read ``all``).
    Strata (e.g. ``group``, ``site``) come from ``participants`` (a participants.tsv path
    or frame, joined on ``participant_id``), or from ``subjects`` itself when it already
    holds them. Subjects with a missing stratum form their own (NaN) group. Groups keep
    the order in which they first appear.
    """
    strata = list(strata)
    table = subjects.copy()
    if strata:
        if participants is not None:
            frame = _participants_frame(participants)
            missing = [s for s in strata if s not in frame.columns]
            if missing:
                raise ValueError(f"participants table has no column {missing} to stratify by")
            if "participant_id" not in frame.columns:
                raise ValueError("participants table has no participant_id column")
            table = table.drop(columns=[s for s in strata if s in table.columns])
            table = table.merge(
                frame[["participant_id", *strata]].drop_duplicates("participant_id"),
                on="participant_id",
                how="left",
            )
        missing = [s for s in strata if s not in table.columns]
        if missing:
            raise ValueError(f"cannot stratify by {missing}: pass the participants table")
    columns = [*strata, *STUDY_COLUMNS]
    if table.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=float if c in STATISTICS else object) for c in columns}
        )

    values = pd.to_numeric(table["value"], errors="coerce").astype(np.float64)
    table["value"] = values.where(np.isfinite(values))
    blocks = [_summarise(table, [])] + [_summarise(table, [stratum]) for stratum in strata]
    for block in blocks:
        for stratum in strata:
            if stratum not in block.columns:
                block[stratum] = ALL_SUBJECTS
    return pd.concat(blocks, ignore_index=True)[columns]


def _summarise(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Statistics of ``value`` per method × map × region × metric (and ``by``)."""
    keys = [*by, "method", "map", "region", "metric"]
    grouped = table.groupby(keys, sort=False, dropna=False)["value"]
    result = pd.DataFrame(
        {
            "n": grouped.count(),
            "mean": grouped.mean(),
            "sd": grouped.std(ddof=1),
            "median": grouped.median(),
            "q1": grouped.quantile(0.25),
            "q3": grouped.quantile(0.75),
        }
    ).reset_index()
    result["n"] = result["n"].astype(np.int64)
    if by:
        result[by] = result[by].astype(object)
    return result


# ----------------------------------------------------------------------------- markdown


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return NA_REP
        return f"{value:.4g}"
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NA_REP
    return str(value).replace("|", "\\|")


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned, 4 significant digits)."""
    columns = list(table.columns)
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in columns]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def study_markdown(study: pd.DataFrame, n_subjects: int | None = None) -> str:
    """Readable version of the study table: a short header, then one table per map."""
    header = [
        "# bolus study metrics",
        "",
        "Agreement of every method's maps with the reference, over subjects: n (subjects "
        "with a finite value), mean, SD, median and quartiles (Q1, Q3). Region `brain` is the "
        "brain mask; `lesion` the lesion mask, or the reference's hypoperfusion lesion "
        "(Tmax above threshold). Errors (MAE, RMSE) are in the map's units, PSNR in dB, "
        "HD95 in mm, lesion volumes in ml. Full precision: `study.tsv`.",
    ]
    if n_subjects is not None:
        header += ["", f"Subjects: {n_subjects}."]
    sections = ["\n".join(header)]
    if study.empty:
        sections.append("No metrics were computed.")
    for name in _ordered_maps(study["map"].dropna().unique()) if not study.empty else []:
        part = study[study["map"] == name].drop(columns="map")
        unit = MAP_UNITS.get(name)
        title = f"## {name.upper()}" + (f" ({unit})" if unit else "")
        sections.append(title + "\n\n" + markdown_table(part))
    return "\n\n".join(sections) + "\n"


def write_study_tables(
    subject_tables: Sequence[str | Path] | pd.DataFrame,
    output_dir: str | Path,
    participants: pd.DataFrame | str | Path | None = None,
    strata: Sequence[str] = (),
    excluded: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write ``metrics/subjects.tsv``, ``metrics/study.tsv`` and ``metrics/study.md``.

    ``subject_tables`` is a long table or a list of per-subject TSVs to concatenate.
    ``excluded`` (participant_id, stage, status, reason; see :func:`bolus.qc.exclusions`)
    is listed at the end of study.md.
    Returns the paths written, keyed ``subjects``, ``study``, ``markdown``.
    """
    if isinstance(subject_tables, pd.DataFrame):
        subjects = subject_tables[list(SUBJECT_COLUMNS)].copy()
        subjects["value"] = pd.to_numeric(subjects["value"], errors="coerce").astype(np.float64)
    else:
        subjects = read_subject_tables(subject_tables)
    study = study_table(subjects, participants, strata)
    written = {
        "subjects": write_tsv(subjects, paths.subjects_table(output_dir)),
        "study": write_tsv(study, paths.study_table(output_dir)),
    }
    markdown = paths.study_markdown(output_dir)
    text = study_markdown(study, n_subjects=int(subjects["participant_id"].nunique()))
    if excluded is not None and len(excluded):
        text += (
            f"\n## Excluded subjects ({len(excluded)})\n\n"
            + markdown_table(excluded[["participant_id", "stage", "reason"]])
            + "\n"
        )
    atomic.write_text(markdown, text)
    written["markdown"] = markdown
    return written
