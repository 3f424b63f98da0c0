"""Is the chosen DICOM series whole and consistent? Checks that name the file and the cause.

dcm2niix converts what it is given and exits 0 on much that is wrong; these checks run on
the headers (and file sizes) of the series chosen by :func:`bolus.io.dicom.select_series`
before any conversion, so a bad export fails at inspection with a reason a person can act
on: which file is truncated, which volume lacks slices, which echo times disagree.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bolus.io.errors import SubjectError

#: bytes the Pixel Data element's own header takes (tag 4 + VR 2 + reserved 2 + length 4)
_PIXEL_TAG_BYTES = 12
#: echo times (ms) closer than this are the same echo (headers round differently)
_ECHO_TOLERANCE_MS = 0.01
#: repetition times (ms) closer than this are the same
_TR_TOLERANCE_MS = 0.1


def _preview(items, limit: int = 3) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def unreadable_dicom_files(folder: str | Path) -> list[Path]:
    """Files in ``folder`` marked as DICOM (``DICM`` at byte 128) that pydicom cannot read,
    or reads as garbage (no SOP class, in the dataset or in the file meta header)."""
    import warnings

    import pydicom

    bad = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) != b"DICM":
                continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            meta = getattr(ds, "file_meta", None)
            if "SOPClassUID" not in ds and "MediaStorageSOPClassUID" not in (meta or {}):
                bad.append(path)
        except Exception:  # noqa: BLE001 (any parser failure means: unreadable)
            bad.append(path)
    return bad


def check_dicom_series(info, subject: str, folder: str | Path) -> None:
    """Raise :class:`SubjectError` when the series ``info`` (a
    :class:`bolus.io.dicom.SeriesInfo`, classic or enhanced storage) has truncated files,
    volumes with missing slices, or more than one echo time or repetition time. Works on
    what :func:`bolus.io.dicom.discover_series` read (no file is read again). Mosaic series
    (one file per volume) skip the slice count."""
    folder = Path(folder)
    truncated = [
        (path, max(size - offset - _PIXEL_TAG_BYTES, 0), expected)
        for path, offset, expected, size in info.file_sizes
        if expected is not None and size < offset + _PIXEL_TAG_BYTES + expected
    ]
    if truncated:
        path, have, want = truncated[0]
        raise SubjectError(
            subject,
            path,
            f"DICOM file is truncated ({have} of {want} bytes of pixel data); "
            f"{len(truncated)} truncated file(s) in the series: "
            f"{_preview(p.name for p, _, _ in truncated)}. Re-export the series",
        )
    echo_times, repetition_times, per_volume = {}, {}, Counter()
    for frame in info.frames:
        if frame.echo_time_ms is not None:
            echo_times.setdefault(round(frame.echo_time_ms / _ECHO_TOLERANCE_MS), []).append(
                frame.path
            )
        if frame.repetition_time_ms is not None:
            repetition_times.setdefault(round(frame.repetition_time_ms / _TR_TOLERANCE_MS), 0)
            repetition_times[round(frame.repetition_time_ms / _TR_TOLERANCE_MS)] += 1
        if frame.temporal is not None:
            per_volume[frame.temporal] += 1
    if len(echo_times) > 1:
        values = sorted(k * _ECHO_TOLERANCE_MS for k in echo_times)
        counts = ", ".join(f"{v:g} ms ({len(echo_times[round(v / _ECHO_TOLERANCE_MS)])} images)"
                           for v in values)  # fmt: skip
        raise SubjectError(
            subject,
            folder,
            f"EchoTime is not the same across series '{info.description}': {counts}. "
            "Quantification needs one echo time (export each echo as its own series)",
        )
    if len(repetition_times) > 1:
        counts = ", ".join(f"{k * _TR_TOLERANCE_MS:g} ms ({n} images)"
                           for k, n in sorted(repetition_times.items()))  # fmt: skip
        raise SubjectError(
            subject,
            folder,
            f"RepetitionTime is not the same across series '{info.description}': {counts}. "
            "A dynamic series has one repetition time (is this several series in one?)",
        )
    if info.mosaic:
        return
    n_slices = info.n_slices
    short = sorted(v for v, n in per_volume.items() if n < n_slices)
    if not per_volume and info.n_images % n_slices:
        short = ["?"]
    if short:
        unreadable = unreadable_dicom_files(folder)
        cause = (
            f"; unreadable DICOM file(s) in the folder: {_preview(p.name for p in unreadable)}"
            if unreadable
            else ""
        )
        counts = _preview(f"{v} ({per_volume.get(v, 0)} of {n_slices})" for v in short)
        raise SubjectError(
            subject,
            folder,
            f"series '{info.description}' has {len(short)} volume(s) with missing slices "
            f"(volume: slices found): {counts}{cause}",
        )
