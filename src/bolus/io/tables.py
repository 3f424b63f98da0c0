"""Small per-subject text files of the pipeline: the converted series' timing (JSON
sidecar) and the AIF table. numpy only, so a stage that reads them pays no pandas import."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from bolus.io import atomic

#: AIF.tsv's columns: time (s), the arterial curve (ΔR2* 1/s, or HU), optionally the VOF
AIF_COLUMNS = ("time", "concentration", "vof")


def read_sidecar_timing(sidecar_json) -> tuple[np.ndarray, float | None]:
    """(volume onset times in s, echo time in s) from the converted series' sidecar; the
    echo time is None when the sidecar has none (CT perfusion)."""
    sidecar = json.loads(Path(sidecar_json).read_text())
    times = np.asarray(sidecar["VolumeTiming"], dtype=float)
    te = sidecar.get("EchoTime")
    return times, None if te is None else float(te)


def write_aif_table(path, times_s, curve, vof=None) -> Path:
    """AIF.tsv: header, columns ``time`` (s) and ``concentration`` (ΔR2* 1/s or HU), and
    ``vof`` (the venous output function, same units) when one was found."""
    columns = [np.asarray(times_s, float), np.asarray(curve, float)]
    if vof is not None:
        columns.append(np.asarray(vof, float))
    buffer = io.StringIO()
    np.savetxt(
        buffer,
        np.column_stack(columns),
        fmt="%.8g",
        delimiter="\t",
        header="\t".join(AIF_COLUMNS[: len(columns)]),
        comments="",
    )
    return atomic.write_text(path, buffer.getvalue())


def read_aif_table(path, column: str = "concentration") -> tuple[np.ndarray, np.ndarray]:
    """(times in s, ``column``) of an AIF table (any tab-separated table with a header row
    naming ``time`` and ``column``)."""
    text = Path(path).read_text()
    header = text.split("\n", 1)[0].rstrip("\r").split("\t")
    missing = {"time", column} - set(header)
    if missing:
        raise ValueError(f"{path}: AIF table lacks column(s) {', '.join(sorted(missing))}")
    values = np.loadtxt(io.StringIO(text), delimiter="\t", skiprows=1, ndmin=2)
    return values[:, header.index("time")], values[:, header.index(column)]
