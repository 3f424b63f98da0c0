"""Per-stage verdicts of every subject, qc.tsv, and the end-of-run summary.

Each per-subject stage ends by writing a verdict ``qc/<participant_id>_<stage>.json``
(:func:`bolus.paths.verdict`)::

    {"participant_id": "sub-07", "stage": "convert", "status": "failed",
     "reason": "sub-07: .../IM_002_00017.dcm: DICOM file is truncated (...)"}

``status`` is ``ok``, ``failed`` (an expected data problem, :class:`SubjectError`; the
reason names subject, file and cause) or ``skipped`` (an earlier stage failed). A subject's
chain is read in stage order and stops at its first verdict that is not ``ok``; verdicts
further on (left from an earlier run) are ignored.

qc.tsv has one row per subject and stage reached (``participant_id, stage, status,
reason``): a subject that completed has one ``ok`` row per stage, an excluded subject its
``ok`` rows and then exactly one ``failed`` row, so ``status == "failed"`` lists the
exclusions once each.

Learned models are trained once per cohort: each training job leaves a verdict
(:func:`bolus.paths.model_verdict`: ok, ``skipped`` — it cannot be trained on this cohort,
e.g. no TOF or no reference map it predicts — or ``failed``), listed in qc.tsv as rows
``participant_id = cohort``, ``stage = train_<model>``. A model that did not train costs
no subject anything: the study tables score every other method.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bolus import paths
from bolus.io import atomic

QC_COLUMNS = ("participant_id", "stage", "status", "reason")
#: exit status of a run that wrote the study tables but excluded at least one subject
PARTIAL_EXIT_STATUS = 3
#: qc.tsv's participant_id of the cohort-wide rows (model training)
COHORT = "cohort"


def write_verdict(path, participant_id: str, stage: str, status: str, reason: str = "", **extra):
    record = {
        "participant_id": participant_id,
        "stage": stage,
        "status": status,
        "reason": reason,
        **extra,
    }
    atomic.write_json(path, record)
    return record


def read_verdict(path) -> dict:
    return json.loads(Path(path).read_text())


def subject_chain(output_dir, participant_id: str) -> list[dict]:
    """The verdicts of one subject in stage order, up to and including the first that is
    not ok (missing verdicts end the chain: that stage has not run yet)."""
    chain = []
    for stage in paths.STAGES:
        path = paths.verdict(output_dir, participant_id, stage)
        if not path.exists():
            break
        record = read_verdict(path)
        chain.append(record)
        if record.get("status") != "ok":
            break
    return chain


def model_verdicts(output_dir, models: Iterable[str]) -> dict[str, dict]:
    """``{model: verdict}`` of each model's training (``missing`` when it did not run)."""
    found = {}
    for model in models:
        path = paths.model_verdict(output_dir, model)
        if path.exists():
            found[model] = read_verdict(path)
        else:
            found[model] = {"status": "missing", "reason": "training did not run (see the logs)"}
    return found


def qc_table(
    output_dir, participant_ids: Iterable[str], models: Iterable[str] = ()
) -> pd.DataFrame:
    """qc.tsv's rows for ``participant_ids`` from their verdicts, then one row per learned
    model's training (``participant_id`` :data:`COHORT`)."""
    rows = []
    for pid in participant_ids:
        chain = subject_chain(output_dir, pid)
        if not chain:
            rows.append((pid, "inspect", "missing", "not inspected"))
            continue
        for record in chain:
            status = record.get("status", "missing")
            reason = record.get("reason", "")
            if status == "skipped":  # cannot follow an ok chain; an earlier run's leftover
                status, reason = "missing", f"stage did not run ({reason})"
            rows.append((pid, record["stage"], status, reason))
        last = chain[-1]
        if last.get("status") == "ok" and last["stage"] != paths.STAGES[-1]:
            following = paths.STAGES[paths.STAGES.index(last["stage"]) + 1]
            rows.append((pid, following, "missing", "stage did not run (see the logs)"))
    for model, record in model_verdicts(output_dir, models).items():
        rows.append((COHORT, f"train_{model}", record["status"], record.get("reason", "")))
    return pd.DataFrame(rows, columns=list(QC_COLUMNS))


def _subject_rows(qc: pd.DataFrame) -> pd.DataFrame:
    return qc[qc["participant_id"] != COHORT]


def completed(qc: pd.DataFrame) -> list[str]:
    """Subjects whose last stage (metrics) is ok."""
    done = qc[(qc["stage"] == paths.STAGES[-1]) & (qc["status"] == "ok")]
    return list(done["participant_id"])


def exclusions(qc: pd.DataFrame) -> pd.DataFrame:
    """One row per subject that did not complete: participant_id, stage, status, reason."""
    last = _subject_rows(qc).groupby("participant_id", sort=False).tail(1)
    return last[last["status"] != "ok"].reset_index(drop=True)


def summary(output_dir) -> tuple[int, int, str]:
    """(subjects excluded, subjects in qc.tsv, a plain sentence on what happened and where
    to look) from ``<output_dir>/qc.tsv``."""
    qc_path = paths.qc_table(output_dir)
    if not qc_path.exists():
        return 0, 0, f"bolus: no {qc_path} yet: the study step has not run"
    qc = pd.read_csv(qc_path, sep="\t", dtype=str, keep_default_na=False)
    n_total = _subject_rows(qc)["participant_id"].nunique()
    excluded = exclusions(qc)
    models = qc[(qc["participant_id"] == COHORT) & (qc["status"] != "ok")]
    not_trained = [
        f"  model {row.stage.removeprefix('train_')} {row.status}: {row.reason}"
        for row in models.itertuples()
    ]
    if not_trained:
        not_trained.insert(0, "bolus: learned models left out of the study tables:")
    if excluded.empty:
        return (
            0,
            n_total,
            "\n".join(
                [
                    f"bolus: all {n_total} subjects completed; study: {output_dir}/metrics",
                    *not_trained,
                ]
            ),
        )
    lines = [
        f"bolus: {len(excluded)} of {n_total} subjects failed and are excluded from the study "
        f"tables ({n_total - len(excluded)} completed). Reasons in {qc_path}; "
        f"logs in {Path(output_dir) / 'logs'}/<participant_id>/<stage>.log:"
    ]
    for row in excluded.itertuples():
        lines.append(f"  {row.participant_id} at {row.stage}: {row.reason}")
    return len(excluded), n_total, "\n".join(lines + not_trained)
