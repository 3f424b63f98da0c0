"""Per-subject metric tables and their study-level aggregation.

Per subject, :func:`subject_metrics` builds a long table with the columns
``participant_id, method, map, region, metric, value``:

* for every method, every map present in both the method's maps and the reference, and
  every region of the subject (:mod:`bolus.evaluate.regions`: ``brain``, ``gm``, ``wm``,
  ``lesion``, ``user_mask``): ``mae rmse nrmse ssim psnr pcc scc``
  (:func:`bolus.evaluate.metrics.map_metrics`; SSIM and PSNR with one data range per map
  and subject, the reference's max − min over ``brain``, in every region), ``finite_fraction`` (share of the region's
  voxels where both maps are finite: the metrics are computed on those only), and
  ``mean_pred``, ``mean_ref`` (the regional means, map units);
* map ``tmax``, region ``brain``: the lesion agreement of
  :func:`bolus.evaluate.lesions.lesion_metrics` (Dice, IoU, HD95, volumes at the configured
  threshold and at the ROC-chosen one, AUC). These rows are always there, also when neither
  map has a lesion (Dice = IoU = 1, HD95 NaN), so every method × map × metric appears for
  every subject.

:func:`study_table` aggregates subjects into ``method, map, region, metric, n, mean, sd,
median, q1, q3`` (strata columns first when asked for). Statistics use the finite values
only: NaN and ±inf (PSNR of identical maps) are left out, and ``n`` counts the values
used. ``sd`` has ddof = 1; quartiles use numpy's default linear interpolation.

:func:`paired_table` compares every method with a baseline method subject by subject
(Wilcoxon signed-rank test, Holm-corrected within each map × region × metric);
:func:`excluded_subjects` lists the subjects without metrics with their QC reason.

Tables are written as TSV (tab-separated, no index, ``%.6g`` floats, missing as ``n/a``
as in BIDS).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bolus import paths
from bolus.evaluate.lesions import LESION_AGREEMENT, default_tmax_threshold_s, lesion_metrics
from bolus.evaluate.metrics import (
    METRIC_NAMES,
    as_mask,
    data_range,
    finite_fraction,
    map_metrics,
    regional_means,
)
from bolus.evaluate.regions import subject_regions
from bolus.io import atomic
from bolus.perfusion.methods import METHODS as SVD_METHODS

SUBJECT_COLUMNS = ("participant_id", "method", "map", "region", "metric", "value")
STATISTICS = ("n", "mean", "sd", "median", "q1", "q3")
STUDY_COLUMNS = ("method", "map", "region", "metric") + STATISTICS
PAIRED_COLUMNS = (
    "method",
    "baseline",
    "map",
    "region",
    "metric",
    "n_pairs",
    "median_method",
    "median_baseline",
    "median_difference",
    "statistic",
    "p",
    "p_holm",
)
EXCLUDED_COLUMNS = ("participant_id", "stage", "status", "reason")
#: the column subjects.tsv adds to :data:`SUBJECT_COLUMNS`: the subject's participants.tsv split
SPLIT = "split"
#: metrics of every map in every region
REGION_METRICS = METRIC_NAMES + ("finite_fraction", "mean_pred", "mean_ref")
BRAIN_METRICS = REGION_METRICS
#: lesion agreement metrics, rows of map ``tmax``, region ``brain``
LESION_METRICS = LESION_AGREEMENT
MAP_UNITS = paths.MAP_UNITS
FLOAT_FORMAT = "%.6g"
NA_REP = "n/a"


def _ordered_maps(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [m for m in paths.MAPS if m in names] + sorted(names - set(paths.MAPS))


def _ordered_methods(names: Iterable[str]) -> list[str]:
    names = set(map(str, names))
    return [m for m in SVD_METHODS if m in names] + sorted(names - set(SVD_METHODS))


def subject_metrics(
    participant_id: str,
    method_maps: Mapping[str, Mapping[str, np.ndarray]],
    reference_maps: Mapping[str, np.ndarray],
    brain_mask: np.ndarray,
    spacing_mm: Sequence[float],
    tmax_threshold_s: float | None = None,
    lesion_mask: np.ndarray | None = None,
    tissue: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Long table of every metric of every method's maps against the reference.

    Parameters
    ----------
    participant_id : ``sub-<label>``
    method_maps : ``{method: {map: array}}``, all on the brain mask's grid
    reference_maps : ``{map: array}`` on the same grid
    brain_mask : the subject's brain mask where the reference is defined (region ``brain``)
    spacing_mm : voxel size, for HD95 and lesion volumes
    tmax_threshold_s : lesion threshold; None takes the config default (6 s)
    lesion_mask : optional user lesion mask on the same grid (region ``user_mask``)
    tissue : optional ``{"gm": mask, "wm": mask}`` on the same grid (regions ``gm``, ``wm``)

    Returns the columns :data:`SUBJECT_COLUMNS`; see the module docstring for the rows.
    """
    if tmax_threshold_s is None:
        tmax_threshold_s = default_tmax_threshold_s()
    brain = as_mask(brain_mask)
    regions = subject_regions(reference_maps, brain, tmax_threshold_s, lesion_mask, tissue)

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
            pred = np.asarray(pred, dtype=np.float64)
            ref = np.asarray(ref, dtype=np.float64)
            span = data_range(ref, regions["brain"])  # one range per map and subject
            for region, mask in regions.items():
                values = map_metrics(pred, ref, mask, span)
                values["finite_fraction"] = finite_fraction(pred, ref, mask)
                values["mean_pred"], values["mean_ref"] = regional_means(pred, ref, mask)
                rows += [
                    (participant_id, method, name, region, k, values[k]) for k in REGION_METRICS
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

_TEXT_COLUMNS = ("participant_id", "method", "map", "region", "metric")


def write_tsv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as BIDS-style TSV (parent folders created)."""
    from bolus.io.atomic import write_table

    return write_table(path, table, float_format=FLOAT_FORMAT, na_rep=NA_REP)


def _empty_subjects() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype=float if c == "value" else str) for c in SUBJECT_COLUMNS}
    )


_READ_OPTIONS = {
    "sep": "\t",
    "na_values": [NA_REP, "NaN", "nan"],
    "keep_default_na": False,
}
_HEADER = "\t".join(SUBJECT_COLUMNS)
_HEADER_SPLIT = _HEADER + "\tsplit"


def read_subject_table(path: str | Path) -> pd.DataFrame:
    """One per-subject metric TSV (as written by :func:`write_tsv`), checked; a ``split``
    column (as in ``subjects.tsv``) is kept."""
    table = pd.read_csv(path, dtype={c: str for c in (*_TEXT_COLUMNS, SPLIT)}, **_READ_OPTIONS)
    missing = [c for c in SUBJECT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: subject metric table lacks the columns {missing}")
    columns = list(SUBJECT_COLUMNS) + ([SPLIT] if SPLIT in table.columns else [])
    table = table[columns].copy()
    table["value"] = pd.to_numeric(table["value"], errors="coerce").astype(np.float64)
    return table


def _parse_bodies(bodies: list[bytes], header: str = _HEADER) -> pd.DataFrame:
    """Rows of many subject tables in one standard layout (``header``), parsed in one go."""
    import io

    buffer = io.BytesIO(header.encode() + b"\n" + b"".join(bodies))
    dtypes = {c: "category" for c in (*_TEXT_COLUMNS, SPLIT)} | {"value": np.float64}
    return pd.read_csv(buffer, dtype=dtypes, **_READ_OPTIONS)


def _split_of(participant_id: bytes, splits: Mapping[str, str]) -> bytes:
    split = splits.get(participant_id.decode("utf-8", "replace"))
    return (split if isinstance(split, str) and split else NA_REP).encode()


def _with_split(body: bytes, splits: Mapping[str, str]) -> bytes:
    """The rows of a table in the standard layout with each subject's split appended (one
    bytes replace for a one-subject table, the usual case; line by line otherwise)."""
    if not body:
        return body
    pid = body[: body.find(b"\t")]
    if 1 + body.count(b"\n" + pid + b"\t") == body.count(b"\n"):
        return body.replace(b"\n", b"\t" + _split_of(pid, splits) + b"\n")
    lines = body.splitlines()
    return b"".join(
        line + b"\t" + _split_of(line.split(b"\t", 1)[0], splits) + b"\n" for line in lines
    )


def read_subject_tables(
    tables: Iterable[str | Path],
    copy_to: str | Path | None = None,
    chunk: int = 200,
    splits: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Concatenate per-subject metric TSVs, streaming: ``chunk`` files at a time are parsed
    together (one C-parser call instead of one per file) into categorical text columns, so
    1,000 subjects (about a million rows) take tens of MB, never the raw maps.

    Files in the standard layout (the header :data:`SUBJECT_COLUMNS`, as written by
    :func:`write_tsv`, or that plus ``split`` as in ``subjects.tsv``) take this fast path;
    others are read one by one and checked. With ``splits`` (participant_id → ``train``,
    ``val`` or ``test``), every row gets its subject's ``split`` column (``n/a`` for a
    subject not in it). With ``copy_to``, the concatenated table is also written there as it
    streams by, byte for byte the rows of the subject files (plus their split) under one
    header (``subjects.tsv``).

    Returns :data:`SUBJECT_COLUMNS`, then ``split`` when ``splits`` is given or the files
    have it (NaN for rows of files without it).
    """
    from pandas.api.types import union_categoricals

    frames: list[pd.DataFrame] = []
    bodies: list[bytes] = []  # rows waiting to be parsed, all with header ``pending``
    pending = _HEADER

    def flush():
        if bodies:
            frames.append(_parse_bodies(bodies, pending))
            bodies.clear()

    out = None
    if copy_to is not None:
        Path(copy_to).parent.mkdir(parents=True, exist_ok=True)
        out = open(copy_to, "wb")
        out.write((_HEADER_SPLIT if splits is not None else _HEADER).encode() + b"\n")
    try:
        for path in tables:
            raw = Path(path).read_bytes()
            first, _, body = raw.partition(b"\n")
            header = first.rstrip(b"\r").decode("utf-8", "replace")
            if header in (_HEADER, _HEADER_SPLIT):
                body = body.replace(b"\r\n", b"\n")
                if body and not body.endswith(b"\n"):
                    body += b"\n"
                if splits is not None and header == _HEADER:
                    body, header = _with_split(body, splits), _HEADER_SPLIT
                if header != pending:  # rows keep the order of the files
                    flush()
                    pending = header
                bodies.append(body)
                if len(bodies) >= chunk:
                    flush()
                if out is not None and splits is None and header == _HEADER_SPLIT:
                    body = b"".join(line.rsplit(b"\t", 1)[0] + b"\n" for line in body.splitlines())
            else:
                flush()
                frame = read_subject_table(path)
                if splits is not None and SPLIT not in frame.columns:
                    frame[SPLIT] = frame["participant_id"].astype(str).map(splits)
                frames.append(frame.astype({c: "category" for c in frame.columns if c != "value"}))
                copied = frame if splits is not None else frame[list(SUBJECT_COLUMNS)]
                text = copied.to_csv(sep="\t", index=False, header=False,
                                     float_format=FLOAT_FORMAT, na_rep=NA_REP)  # fmt: skip
                body = text.encode()
            if out is not None:
                out.write(body)
        flush()
    finally:
        if out is not None:
            out.close()
    frames = [f for f in frames if len(f)]
    with_split = splits is not None or any(SPLIT in f.columns for f in frames)
    if not frames:
        empty = _empty_subjects()
        return empty.assign(**{SPLIT: pd.Series(dtype=str)}) if with_split else empty
    text = list(_TEXT_COLUMNS) + ([SPLIT] if with_split else [])
    for f in frames:
        if with_split and SPLIT not in f.columns:
            f[SPLIT] = pd.Categorical([np.nan] * len(f))
    columns = {c: union_categoricals([f[c] for f in frames], ignore_order=True) for c in text}
    columns["value"] = np.concatenate([f["value"].to_numpy(np.float64) for f in frames])
    return pd.DataFrame(columns)[list(SUBJECT_COLUMNS) + ([SPLIT] if with_split else [])]


def _participants_frame(participants: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(participants, (str, Path)):
        return pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False).replace(
            "", np.nan
        )
    frame = participants
    if "participant_id" not in frame.columns and frame.index.name == "participant_id":
        frame = frame.reset_index()
    return frame


#: held-out subjects: the split the study tables score when learned models are configured
HELD_OUT = "test"


@dataclass(frozen=True)
class StudyScope:
    """Which completed subjects the study tables score (config ``study.subjects``).

    ``split`` is :data:`HELD_OUT` when learned models are configured and the scope is
    ``test`` (every method, the SVD methods included, is then scored on the same held-out
    subjects), None when every completed subject counts. ``note`` says so in one sentence for
    ``study.md`` and the report (None: nothing to say beyond the count); ``warning`` is set
    when the tables are empty because no completed subject is held out.
    """

    split: str | None
    n_completed: int
    n_scored: int
    note: str | None = None
    warning: str | None = None


def study_scope(
    subjects: pd.DataFrame, models: Sequence[str] = (), scope: str | None = None
) -> StudyScope:
    """The :class:`StudyScope` of a long subject table with a ``split`` column.

    ``scope`` is config ``study.subjects`` (None: the schema default, ``test``). With no
    learned models (``models`` empty) nothing is held out, every subject counts and no note
    is needed. A learned model is never scored on its own training subjects unless the
    user asks for it (``all``): the ``train`` subjects fit it and ``val`` ones pick its
    epoch, so only ``test`` subjects are held out."""
    if scope is None:
        from bolus.config import schema_defaults

        scope = schema_defaults()["study"]["subjects"]
    if scope not in ("test", "all"):
        raise ValueError(f"study.subjects must be test or all, not {scope!r}")
    ids = subjects["participant_id"].astype(str)
    n_completed = int(ids.nunique())
    models = [str(m) for m in models]
    if not models:
        return StudyScope(None, n_completed, n_completed)
    named = ", ".join(f"`{m}`" for m in models)
    if scope == "all":
        note = (
            f"Subjects: {n_completed}, every completed subject (config `study.subjects: all`). "
            f"The learned models ({named}) are also scored on the `train` and `val` subjects "
            "they were trained on, which flatters them; `study.subjects: test` scores the "
            "held-out subjects only."
        )
        return StudyScope(None, n_completed, n_completed, note)
    if SPLIT not in subjects.columns:
        raise ValueError(
            "the subject table has no split column: pass the participants' splits to score "
            "the learned models on the held-out test subjects"
        )
    held_out = subjects[SPLIT].astype(str) == HELD_OUT
    n_scored = int(ids[held_out.to_numpy()].nunique())
    if n_scored == 0 and n_completed > 0:
        warning = (
            f"**Warning: no test subjects.** None of the {n_completed} completed subjects "
            "has `split` = `test` in participants.tsv, so the study tables are empty: the "
            f"learned models ({named}) would otherwise be scored on the subjects they were "
            "trained on. Mark held-out subjects `test` in the `split` column of "
            "participants.tsv before training, or set config "
            "`study.subjects: all` to score every subject, training subjects included. "
            "Every subject's metrics are in `subjects.tsv`."
        )
        return StudyScope(HELD_OUT, n_completed, 0, warning=warning)
    note = (
        f"Subjects: the {n_scored} held-out `test` subjects (of {n_completed} completed). "
        f"The learned models ({named}) were trained on the `train` subjects and stopped "
        "early on the `val` ones, so those are left out here, and every method, the SVD "
        "methods included, is scored on the same test subjects. `subjects.tsv` holds every "
        "subject with its `split`; config `study.subjects: all` scores them all."
    )
    return StudyScope(HELD_OUT, n_completed, n_scored, note)


def scored_subjects(subjects: pd.DataFrame, scope: StudyScope) -> pd.DataFrame:
    """The rows of the subjects that :func:`study_scope` says the study tables score."""
    if scope.split is None:
        return subjects
    keep = (subjects[SPLIT].astype(str) == scope.split).to_numpy()
    return subjects.loc[keep].reset_index(drop=True)


def available_strata(participants: pd.DataFrame | str | Path | None, requested: Sequence[str]):
    """The ``requested`` stratum columns that the participants table has (config
    ``study.strata`` lists candidates, e.g. ``[group, site]``; absent ones are skipped)."""
    if participants is None:
        return []
    columns = set(_participants_frame(participants).columns)
    return [s for s in requested if s in columns]


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
    table = subjects
    if strata:
        if participants is not None:
            frame = _participants_frame(participants)
            missing = [s for s in strata if s not in frame.columns]
            if missing:
                raise ValueError(f"participants table has no column {missing} to stratify by")
            if "participant_id" not in frame.columns:
                raise ValueError("participants table has no participant_id column")
            lookup = frame[["participant_id", *strata]].drop_duplicates("participant_id")
            lookup = lookup.set_index("participant_id")
            table = table.drop(columns=[s for s in strata if s in table.columns])
            ids = table["participant_id"].astype(str)
            table = table.assign(**{s: ids.map(lookup[s]).to_numpy() for s in strata})
        missing = [s for s in strata if s not in table.columns]
        if missing:
            raise ValueError(f"cannot stratify by {missing}: pass the participants table")
    columns = [*strata, *STUDY_COLUMNS]
    if table.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=float if c in STATISTICS else object) for c in columns}
        )

    values = pd.to_numeric(table["value"], errors="coerce").astype(np.float64)
    table = table.assign(value=values.where(np.isfinite(values)))
    blocks = [_summarise(table, [])] + [_summarise(table, [stratum]) for stratum in strata]
    for block in blocks:
        for stratum in strata:
            if stratum not in block.columns:
                block[stratum] = ALL_SUBJECTS
    return pd.concat(blocks, ignore_index=True)[columns]


def _summarise(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Statistics of ``value`` per method × map × region × metric (and ``by``)."""
    keys = [*by, "method", "map", "region", "metric"]
    grouped = table.groupby(keys, sort=False, dropna=False, observed=True)["value"]
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
    for key in keys:
        result[key] = result[key].astype(object)
    return result


# ----------------------------------------------------------------------------- paired


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down; NaN entries ignored and kept NaN).

    With m tests sorted p₍₁₎ ≤ … ≤ p₍ₘ₎: adj₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1)·p₍ⱼ₎)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


#: above this many pairs scipy's default ("auto") is the normal approximation
EXACT_MAX_PAIRS = 50


def _wilcoxon(differences: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p) of the Wilcoxon signed-rank test of paired differences
    (scipy's defaults: zero differences dropped; exact distribution up to 50 pairs without
    ties, else a permutation or normal approximation)."""
    from scipy.stats import wilcoxon

    if differences.size == 0:
        return float("nan"), float("nan")
    if not np.any(differences):
        return 0.0, 1.0  # no pair differs: nothing to reject
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        result = wilcoxon(differences)
    return float(result.statistic), float(result.pvalue)


def _wilcoxon_batch(batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The normal-approximation test of many samples of more than 50 pairs in one scipy
    call: samples padded with zeros, which the test drops like any zero difference, so
    each result equals scipy's for the sample alone."""
    from scipy.stats import wilcoxon

    width = max(d.size for d in batch)
    padded = np.zeros((len(batch), width))
    for i, d in enumerate(batch):
        padded[i, : d.size] = d
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        result = wilcoxon(padded, axis=-1, method="asymptotic")
    statistic = np.atleast_1d(np.asarray(result.statistic, dtype=np.float64))
    p = np.atleast_1d(np.asarray(result.pvalue, dtype=np.float64))
    none_differ = ~padded.any(axis=1)
    statistic[none_differ], p[none_differ] = 0.0, 1.0
    return statistic, p


def paired_table(subjects: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every method against ``baseline``, subject by subject (columns :data:`PAIRED_COLUMNS`).

    For each method ≠ baseline and each map × region × metric both have, the pairs are the
    subjects where both values are finite; ``median_difference`` is the median of
    (method − baseline) over the pairs, ``p`` the two-sided Wilcoxon signed-rank p-value
    (scipy's defaults; 1.0 when every difference is 0; NaN without a pair), and ``p_holm``
    the Holm-corrected p within each map × region × metric (the family of comparisons of
    every method with the baseline on one outcome). Empty when the baseline is not among
    the methods.
    """
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in PAIRED_COLUMNS})
    if subjects.empty:
        return empty
    outcome = ["map", "region", "metric"]
    group_keys = ["method", *outcome]
    values = pd.to_numeric(subjects["value"], errors="coerce").astype(np.float64)
    table = subjects.assign(value=values.where(np.isfinite(values)))
    is_base = (table["method"].astype(str) == baseline).to_numpy()
    if not is_base.any():
        return empty
    base = table.loc[is_base, [*outcome, "participant_id", "value"]]
    base = base.rename(columns={"value": "baseline_value"}).drop_duplicates(
        [*outcome, "participant_id"]
    )
    others = table.loc[~is_base]
    pairs = others.merge(base, on=[*outcome, "participant_id"], how="inner")
    pairs = pairs[pairs["value"].notna() & pairs["baseline_value"].notna()]
    # every method × map × region × metric the two share, also those without a finite pair
    shared = others[group_keys].drop_duplicates().merge(base[outcome].drop_duplicates(), on=outcome)
    shared = shared.astype(str).reset_index(drop=True)
    method_values = pairs["value"].to_numpy(np.float64)
    base_values = pairs["baseline_value"].to_numpy(np.float64)
    indices = {
        tuple(map(str, key)): index
        for key, index in pairs.groupby(group_keys, sort=False, observed=True).indices.items()
    }
    records, batch, batch_rows = [], [], []
    for row, key in enumerate(shared.itertuples(index=False, name=None)):
        index = indices.get(key, np.empty(0, dtype=np.int64))
        m, b = method_values[index], base_values[index]
        diff = m - b
        if diff.size > EXACT_MAX_PAIRS:
            batch.append(diff)
            batch_rows.append(row)
            statistic = p = np.nan
        else:
            statistic, p = _wilcoxon(diff)
        median = lambda x: float(np.median(x)) if x.size else np.nan  # noqa: E731
        records.append((key[0], baseline, *key[1:], int(diff.size), median(m), median(b),
                        median(diff), statistic, p))  # fmt: skip
    result = pd.DataFrame.from_records(records, columns=list(PAIRED_COLUMNS[:-1]))
    if batch:
        statistic, p = _wilcoxon_batch(batch)
        result.loc[batch_rows, "statistic"] = statistic
        result.loc[batch_rows, "p"] = p
    result["p_holm"] = np.nan
    for _, index in result.groupby(outcome, sort=False).groups.items():
        result.loc[index, "p_holm"] = holm(result.loc[index, "p"].to_numpy())
    rank = {m: i for i, m in enumerate(_ordered_maps(result["map"]))}
    rank |= {m: i for i, m in enumerate(_ordered_methods(result["method"]))}
    result = result.sort_values(["map", "method"], key=lambda c: c.map(rank), kind="stable")
    return result.reset_index(drop=True)


# ----------------------------------------------------------------------------- exclusions


def read_qc(qc: pd.DataFrame | str | Path | None) -> pd.DataFrame:
    """qc.tsv as a frame (any extra columns kept; missing reason/stage read as empty)."""
    if qc is None:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in EXCLUDED_COLUMNS})
    if isinstance(qc, (str, Path)):
        qc = pd.read_csv(qc, sep="\t", dtype=str, keep_default_na=False)
    qc = qc.copy()
    for column in EXCLUDED_COLUMNS:
        if column not in qc.columns:
            qc[column] = ""
    return qc.fillna("")


def excluded_subjects(
    qc: pd.DataFrame | str | Path | None, included: Iterable[str]
) -> pd.DataFrame:
    """Subjects of qc.tsv that have no metrics, with their QC reason.

    One row per subject (columns :data:`EXCLUDED_COLUMNS`): the first row of qc.tsv for
    that subject whose status is not ``ok`` (with one row per stage, the stage that
    failed), or, when every row says ok, status ``missing`` and reason "no metrics".
    """
    qc = read_qc(qc)
    included = set(map(str, included))
    rows = []
    for pid, group in qc.groupby("participant_id", sort=False):
        if pid in included:
            continue
        bad = group[group["status"].str.lower() != "ok"]
        if len(bad):
            first = bad.iloc[0]
            rows.append((pid, first["stage"], first["status"], first["reason"]))
        else:
            rows.append((pid, group.iloc[-1]["stage"], "missing", "no metrics"))
    return pd.DataFrame.from_records(rows, columns=list(EXCLUDED_COLUMNS))


# ----------------------------------------------------------------------------- markdown


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return NA_REP
        return f"{value:.4g}"
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NA_REP
    return str(value).replace("|", "\\|").replace("\n", " ")


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


def _map_title(name: str) -> str:
    unit = MAP_UNITS.get(name)
    return f"{name.upper()}" + (f" ({unit})" if unit else "")


def study_markdown(
    study: pd.DataFrame,
    n_subjects: int | None = None,
    paired: pd.DataFrame | None = None,
    excluded: pd.DataFrame | None = None,
    baseline: str | None = None,
    scope: StudyScope | None = None,
    model_verdicts: dict[str, dict] | None = None,
) -> str:
    """Readable version of the study tables: a short header (with ``scope``'s note on the
    subjects scored, or its warning), the excluded subjects, one summary table per map,
    then the paired comparison with the baseline per map."""
    header = [
        "# bolus study metrics",
        "",
        "Agreement of every method's maps with the reference, over subjects: n (subjects "
        "with a finite value), mean, SD, median and quartiles (Q1, Q3). Regions: `brain` "
        "(the brain mask where the reference is defined), `gm` and `wm` (grey and white "
        "matter of the tissue labels), `lesion` (the reference's hypoperfusion lesion, Tmax "
        "above threshold), `user_mask` (the participants.tsv lesion mask). Errors (MAE, "
        "RMSE) and regional means are in the map's units, PSNR in dB, HD95 in mm, lesion "
        "volumes in ml, thresholds in s. SSIM and PSNR use one data range per map and "
        "subject in every region: the reference's max − min over the brain. Full precision: `study.tsv`, `paired.tsv`.",
    ]
    if scope is not None and scope.warning:
        header += ["", scope.warning]
    elif scope is not None and scope.note:
        header += ["", scope.note]
    elif n_subjects is not None:
        header += ["", f"Subjects: {n_subjects}."]
    sections = ["\n".join(header)]
    if excluded is not None:
        if excluded.empty:
            sections.append("## Excluded subjects\n\nNone.")
        else:
            sections.append(
                f"## Excluded subjects ({len(excluded)})\n\nNot in the tables below, with the "
                "reason from `qc.tsv`:\n\n" + markdown_table(excluded)
            )
    left_out = {m: v for m, v in (model_verdicts or {}).items() if v.get("status") != "ok"}
    if left_out:
        table = pd.DataFrame(
            [(m, v.get("status", ""), v.get("reason", "")) for m, v in left_out.items()],
            columns=["model", "status", "reason"],
        )
        sections.append(
            f"## Learned models not in the tables ({len(left_out)})\n\nNot trained on this "
            "cohort (`qc.tsv`, rows `cohort`); every other method is scored:\n\n"
            + markdown_table(table)
        )
    if study.empty and not (scope is not None and scope.warning):
        sections.append("No metrics were computed.")
    for name in _ordered_maps(study["map"].dropna().unique()) if not study.empty else []:
        part = study[study["map"] == name].drop(columns="map")
        sections.append(f"## {_map_title(name)}\n\n" + markdown_table(part))
    if paired is not None and baseline is not None:
        intro = (
            f"## Paired comparison with {baseline}\n\nEvery method against the baseline "
            f"`{baseline}`, subject by subject: median of each, median paired difference "
            "(method − baseline), Wilcoxon signed-rank test (two-sided), p Holm-corrected "
            "over the methods within each map × region × metric."
        )
        if paired.empty:
            sections.append(intro + f"\n\nNo comparison: `{baseline}` is not among the methods.")
        else:
            sections.append(intro)
            for name in _ordered_maps(paired["map"].dropna().unique()):
                part = paired[paired["map"] == name].drop(columns=["map", "baseline"])
                sections.append(f"### {_map_title(name)}\n\n" + markdown_table(part))
    return "\n\n".join(sections) + "\n"


def write_study_tables(
    subject_tables: Sequence[str | Path] | pd.DataFrame,
    output_dir: str | Path,
    participants: pd.DataFrame | str | Path | None = None,
    strata: Sequence[str] = (),
    baseline: str | None = None,
    qc: pd.DataFrame | str | Path | None = None,
    excluded: pd.DataFrame | None = None,
    models: Sequence[str] = (),
    scope: str | None = None,
    model_verdicts: dict[str, dict] | None = None,
) -> dict[str, Path]:
    """Write ``metrics/subjects.tsv``, ``study.tsv``, ``paired.tsv`` and ``study.md``.

    ``subject_tables`` is a long table or a list of per-subject TSVs to concatenate
    (read one at a time). ``baseline`` None takes the config default (``study.baseline``).
    ``qc`` (qc.tsv or its frame) names the excluded subjects; ``excluded`` (participant_id,
    stage, status, reason; see :func:`bolus.qc.exclusions`) gives them directly instead.

    ``subjects.tsv`` holds every subject's rows, with the subject's ``split`` (a last
    column) when ``participants`` has one. With learned ``models`` (config ``models``), the
    study tables score the held-out ``test`` subjects only unless ``scope`` (config
    ``study.subjects``) is ``all``; see :func:`study_scope`.
    ``model_verdicts`` (:func:`bolus.qc.model_verdicts`): study.md names the models that were
    not trained, and why.
    Returns the paths written, keyed ``subjects``, ``study``, ``paired``, ``markdown``.
    """
    if baseline is None:
        from bolus.config import schema_defaults

        baseline = schema_defaults()["study"]["baseline"]
    splits = None
    if participants is not None:
        frame = _participants_frame(participants)
        if SPLIT in frame.columns and "participant_id" in frame.columns:
            splits = dict(zip(frame["participant_id"].astype(str), frame[SPLIT], strict=True))
    if isinstance(subject_tables, pd.DataFrame):
        columns = list(SUBJECT_COLUMNS) + ([SPLIT] if SPLIT in subject_tables.columns else [])
        subjects = subject_tables[columns].copy()
        subjects["value"] = pd.to_numeric(subjects["value"], errors="coerce").astype(np.float64)
        if splits is not None and SPLIT not in subjects.columns:
            subjects[SPLIT] = subjects["participant_id"].astype(str).map(splits)
        write_tsv(subjects, paths.subjects_table(output_dir))
    else:
        subjects = read_subject_tables(
            subject_tables, copy_to=paths.subjects_table(output_dir), splits=splits
        )
    included = subjects["participant_id"].astype(str).unique()
    scoped = study_scope(subjects, models, scope)
    scored = scored_subjects(subjects, scoped)
    if scoped.warning:
        import logging

        logging.getLogger(__name__).warning(scoped.warning.replace("**", ""))
    study = study_table(scored.drop(columns=[SPLIT], errors="ignore"), participants, strata)
    paired = paired_table(scored, baseline)
    if excluded is None and qc is not None:
        excluded = excluded_subjects(qc, included)
    written = {
        "subjects": paths.subjects_table(output_dir),
        "study": write_tsv(study, paths.study_table(output_dir)),
        "paired": write_tsv(paired, paths.paired_table(output_dir)),
    }
    markdown = paths.study_markdown(output_dir)
    atomic.write_text(
        markdown,
        study_markdown(
            study,
            len(included),
            paired=paired,
            excluded=excluded,
            baseline=baseline,
            scope=scoped,
            model_verdicts=model_verdicts,
        ),
    )
    written["markdown"] = markdown
    return written
