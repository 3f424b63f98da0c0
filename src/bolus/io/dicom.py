"""DICOM: series discovery and selection, conversion with dcm2niix, de-identification.

A subject's folder may hold any number of series under any file names. We read the
headers (never the pixels) with pydicom, group files by SeriesInstanceUID, pick the
perfusion series, hand *only its files* to dcm2niix, then check what dcm2niix wrote:
it exits 0 even when it splits, scrambles or drops data.

No patient identifier survives: the sidecar JSON keeps only acquisition parameters,
and every identifier value read from the DICOM headers is searched for in what we write.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bolus.io import atomic
from bolus.io.errors import SubjectError

log = logging.getLogger(__name__)
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)  # what was found and chosen reaches the subject's log

# Header fields that identify a person, a place or a device. Their values are collected from
# the input so we can prove none of them reaches an output.
IDENTIFYING_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "PatientAddress",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "AccessionNumber",
    "StationName",
    "DeviceSerialNumber",
    "StudyID",
)

# Sidecar keys dcm2niix may write that identify a person, site or device, or date the exam.
_SIDECAR_DROP = re.compile(
    r"(Patient(?!Position|Orientation)|Institution|Physician|Operator|Accession|StationName|SerialNumber"
    r"|Date|StudyID|StudyDescription|StudyInstanceUID|SeriesInstanceUID|ProcedureStep|ProtocolName|BidsGuess)",
    re.IGNORECASE,
)


@dataclass
class SeriesInfo:
    """What the headers say about one series in a folder."""

    uid: str
    number: int | None
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)
    positions: set = field(default_factory=set)
    acquisition_times: dict = field(default_factory=dict)  # temporal index -> earliest time (s)
    temporal_indices: set = field(default_factory=set)
    mosaic: bool = False
    echo_time_ms: float | None = None
    repetition_time_ms: float | None = None

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def n_slices(self) -> int:
        return max(len(self.positions), 1)

    @property
    def n_timepoints(self) -> int:
        """Volumes in the series: files per slice position (mosaics: one file per volume)."""
        if self.mosaic:
            return self.n_files
        by_files = self.n_files // self.n_slices
        return max(by_files, len(self.temporal_indices) if len(self.temporal_indices) > 1 else 1)

    @property
    def is_dynamic(self) -> bool:
        return self.n_timepoints > 1

    def summary(self) -> str:
        label = self.description or f"series {self.number}"
        points = "time point" if self.n_timepoints == 1 else "time points"
        images = "image" if self.n_files == 1 else "images"
        return f"{label} ({self.n_files} {images}, {self.n_timepoints} {points})"


def _seconds_of_day(value) -> float | None:
    """DICOM TM (HHMMSS.ffffff) → seconds since midnight, None if absent or malformed."""
    text = str(value or "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", text.replace(":", ""))
    if not match:
        return None
    hh, mm, ss, frac = match.groups()
    return int(hh) * 3600 + int(mm or 0) * 60 + int(ss or 0) + float(frac or 0)


def discover_series(folder: str | Path, subject: str = "") -> list[SeriesInfo]:
    """Read every DICOM header under ``folder`` (recursively) and group by series.

    Files that are not DICOM (READMEs, DICOMDIR, thumbnails) are ignored.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    if not folder.is_dir():
        raise SubjectError(subject, folder, "DICOM folder does not exist")
    series: dict[str, SeriesInfo] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "SeriesInstanceUID" not in ds or "Rows" not in ds:
            continue  # DICOMDIR, presentation states, structured reports
        uid = str(ds.SeriesInstanceUID)
        info = series.get(uid)
        if info is None:
            info = series[uid] = SeriesInfo(
                uid=uid,
                number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
                description=str(ds.get("SeriesDescription", "")),
                modality=str(ds.get("Modality", "")),
                echo_time_ms=float(ds.EchoTime) if ds.get("EchoTime") not in (None, "") else None,
                repetition_time_ms=(
                    float(ds.RepetitionTime) if ds.get("RepetitionTime") not in (None, "") else None
                ),
            )
        info.files.append(path)
        position = ds.get("ImagePositionPatient")
        if position is not None:
            info.positions.add(tuple(round(float(v), 2) for v in position))
        image_type = [str(v).upper() for v in ds.get("ImageType", [])]
        info.mosaic = info.mosaic or "MOSAIC" in image_type
        temporal = ds.get("TemporalPositionIdentifier") or ds.get("AcquisitionNumber")
        if temporal not in (None, ""):
            index = int(temporal)
            info.temporal_indices.add(index)
            seconds = _seconds_of_day(ds.get("AcquisitionTime"))
            if seconds is not None:
                previous = info.acquisition_times.get(index)
                info.acquisition_times[index] = (
                    seconds if previous is None else min(previous, seconds)
                )
    return sorted(series.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))


def _series_matcher(rule):
    """(what the rule asks, predicate on SeriesInfo) for a ``dicom.series`` value other than
    ``most_timepoints``: ``number:N`` or a bare integer N (SeriesNumber), ``regex:PATTERN``
    (re.search on SeriesDescription, case-insensitive), else a case-insensitive substring of
    SeriesDescription."""
    text = str(rule).strip()
    number = re.fullmatch(r"(?:number:)?\s*(\d+)", text, re.IGNORECASE)
    if number:
        wanted = int(number.group(1))
        return f"series number {wanted}", lambda s: s.number == wanted
    if text.lower().startswith("regex:"):
        try:
            pattern = re.compile(text[6:], re.IGNORECASE)
        except re.error as exc:
            raise ValueError(
                f"dicom.series={rule!r} is not a valid regular expression: {exc}"
            ) from exc
        return f"description matching /{pattern.pattern}/", lambda s: bool(
            pattern.search(s.description)
        )
    return f"description containing {text!r}", lambda s: text.lower() in s.description.lower()


def select_series(series: list[SeriesInfo], rule, subject: str, folder) -> SeriesInfo:
    """Pick the perfusion series and log what was found and what was chosen.

    ``rule`` (config ``dicom.series``) = ``most_timepoints``: the dynamic series with the most
    time points (ties: the most images, then the lowest series number); ``number:N`` or ``N``:
    the series with SeriesNumber N; ``regex:PATTERN``: SeriesDescription matching PATTERN
    (case-insensitive ``re.search``); anything else: a case-insensitive substring of
    SeriesDescription. Only dynamic series qualify; several matches: the most time points.
    """
    found = ", ".join(s.summary() for s in series) or "no DICOM images"
    log.info("%s: DICOM series found in %s: %s", subject, folder, found)
    dynamic = [s for s in series if s.is_dynamic]
    if not dynamic:
        raise SubjectError(
            subject, folder, f"DICOM folder holds no dynamic series (found: {found})"
        )
    wanted = "the dynamic series with the most time points"
    if str(rule) != "most_timepoints":
        try:
            wanted, matches = _series_matcher(rule)
        except ValueError as exc:
            raise SubjectError(subject, folder, str(exc)) from exc
        dynamic = [s for s in dynamic if matches(s)]
        if not dynamic:
            raise SubjectError(
                subject, folder, f"no dynamic series matches dicom.series={rule!r} (found: {found})"
            )
    chosen = max(dynamic, key=lambda s: (s.n_timepoints, s.n_files, -(s.number or 0)))
    log.info(
        "%s: chose series %s, %s (dicom.series=%s: %s)",
        subject,
        chosen.number,
        chosen.summary(),
        rule,
        wanted,
    )
    return chosen


def identifying_values(files: list[Path], limit: int = 5) -> set[str]:
    """Identifier values (name, ID, birth date, institution, ...) in a few of ``files``."""
    import pydicom

    values: set[str] = set()
    for path in files[:limit]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for tag in IDENTIFYING_TAGS:
            value = str(ds.get(tag, "") or "").strip()
            if len(value) >= 4:  # shorter strings (e.g. "M", "1") would match by chance
                values.add(value)
                if tag == "PatientName":
                    values.update(p for p in re.split(r"[\^ ]+", value) if len(p) >= 4)
    return values


def deidentified_sidecar(sidecar: dict) -> dict:
    """The dcm2niix sidecar without keys that identify a person, site, device or exam date."""
    return {k: v for k, v in sidecar.items() if not _SIDECAR_DROP.search(k)}


def assert_no_identifiers(text: str, identifiers: set[str], subject: str, what) -> None:
    leaked = sorted(
        v for v in identifiers if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text, re.IGNORECASE)
    )
    if leaked:
        raise SubjectError(
            subject, what, f"patient identifiers would reach the output ({len(leaked)} field(s))"
        )


def dcm2niix_executable() -> str:
    """dcm2niix from the active environment (the PyPI wheel ships it) or the PATH."""
    beside = Path(sys.executable).with_name("dcm2niix")
    if beside.exists():
        return str(beside)
    found = shutil.which("dcm2niix")
    if found is None:
        raise FileNotFoundError(
            "dcm2niix not found: install it (pip install dcm2niix, or make install)"
        )
    return found


def volume_times(info: SeriesInfo, n_volumes: int, tr_s: float) -> list[float]:
    """Onset of each volume (s from the first): from AcquisitionTime when it varies over the
    temporal positions (real timing, jitter included), else the nominal k·TR."""
    times = [info.acquisition_times[k] for k in sorted(info.acquisition_times)]
    if len(times) == n_volumes and len(set(times)) == n_volumes:
        onsets = np.asarray(times) - times[0]
        onsets[onsets < 0] += 86400.0  # acquisitions across midnight
        if np.all(np.diff(onsets) > 0):
            return [round(float(t), 6) for t in onsets]
    return [round(k * tr_s, 6) for k in range(n_volumes)]


def _run_dcm2niix(staged: Path, converted: Path, extra: list[str], subject, dicom_dir):
    """Run dcm2niix on the staged files; returns the images it wrote (sorted)."""
    for old in converted.iterdir():
        old.unlink()
    cmd = [dcm2niix_executable(), "-z", "y", "-b", "y", "-ba", "y", "-f", "dsc", *extra]
    cmd += ["-o", str(converted), str(staged)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(
            proc.stdout.strip().splitlines()[-3:] + proc.stderr.strip().splitlines()[-3:]
        )
        raise SubjectError(subject, dicom_dir, f"dcm2niix failed (exit {proc.returncode}): {tail}")
    for line in proc.stdout.splitlines():
        if line.startswith("Warning"):
            log.info("%s: dcm2niix %s", subject, line.strip())
    return sorted(converted.glob("*.nii*"))


def affine_from_headers(files) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """RAS affine and (columns, rows, slices) of a classic single-frame series from its
    headers, in dcm2niix's convention (i = column, j = row reversed, k = slices along the
    normal ascending); None if the images do not share one orientation and pixel grid."""
    import pydicom

    geometry = set()
    positions = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        needed = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows")
        if any(k not in ds for k in needed):
            return None
        geometry.add(
            (
                tuple(round(float(v), 4) for v in ds.ImageOrientationPatient),
                tuple(round(float(v), 4) for v in ds.PixelSpacing),
                int(ds.Rows),
                int(ds.Columns),
            )
        )
        positions.add(tuple(float(v) for v in ds.ImagePositionPatient))
    if len(geometry) != 1:
        return None
    orientation, (row_spacing, column_spacing), rows, columns = geometry.pop()
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    ordered = sorted(positions, key=lambda p: float(np.dot(normal, p)))
    along = np.array([np.dot(normal, p) for p in ordered])
    step = float(np.median(np.diff(along))) if len(ordered) > 1 else 1.0
    lps = np.eye(4)
    lps[:3, 0] = row_dir * column_spacing
    lps[:3, 1] = -col_dir * row_spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = np.asarray(ordered[0]) + col_dir * row_spacing * (rows - 1)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, (columns, rows, len(ordered))


def header_ordered_series(files, affine: np.ndarray, shape) -> np.ndarray | None:
    """The series rebuilt from the DICOM pixels in acquisition order, in the grid of a
    converted image (``affine`` RAS, ``shape`` (x, y, z, t)); None where that cannot be done
    (mosaics, multi-frame files, missing geometry, slices that do not fall on the grid).

    Each slice position's images are ordered by (TemporalPositionIdentifier or
    AcquisitionNumber, AcquisitionTime, InstanceNumber), never by InstanceNumber alone: a
    slice-major numbering (all time points of a slice, then the next slice) must not scramble
    the volumes. Each image goes where its pixels' world coordinates (ImagePositionPatient,
    ImageOrientationPatient, PixelSpacing) fall in the grid. Values: stored × RescaleSlope +
    RescaleIntercept.
    """
    import pydicom

    if len(shape) != 4:
        return None
    inverse = np.linalg.inv(np.asarray(affine, float))
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    by_position: dict[tuple, list] = {}
    for path in files:
        ds = pydicom.dcmread(path)
        needed = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "PixelData")
        if any(k not in ds for k in needed) or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            return None
        temporal = ds.get("TemporalPositionIdentifier") or ds.get("AcquisitionNumber") or 0
        key = (
            int(temporal),
            _seconds_of_day(ds.get("AcquisitionTime")) or 0.0,
            int(ds.get("InstanceNumber") or 0),
        )
        position = tuple(round(float(v), 2) for v in ds.ImagePositionPatient)
        by_position.setdefault(position, []).append((key, ds))
    counts = {len(v) for v in by_position.values()}
    if counts != {shape[3]}:
        return None
    out = np.zeros(shape, dtype=np.float32)
    filled = np.zeros(shape[2:], dtype=int)
    for images in by_position.values():
        images.sort(key=lambda item: item[0])
        for t, (_, ds) in enumerate(images):
            pixels = ds.pixel_array.astype(np.float32)
            if pixels.ndim != 2:
                return None
            orientation = np.asarray(ds.ImageOrientationPatient, float)
            row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
            r, c = np.indices(pixels.shape)
            world = (
                np.asarray(ds.ImagePositionPatient, float)
                + (c * column_spacing)[..., None] * orientation[:3]
                + (r * row_spacing)[..., None] * orientation[3:]
            ) * lps_to_ras
            index = world @ inverse[:3, :3].T + inverse[:3, 3]
            rounded = np.rint(index).astype(int)
            if np.abs(index - rounded).max() > 0.1:
                return None
            if (rounded < 0).any() or (rounded >= np.asarray(shape[:3])).any():
                return None
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            i, j, k = rounded[..., 0], rounded[..., 1], rounded[..., 2]
            out[i, j, k, t] = pixels * slope + intercept
            filled[np.unique(k), t] += 1
    if not (filled == 1).all():
        return None
    return out


def _checked_volume_order(image, info: SeriesInfo, subject: str):
    """dcm2niix's image if its voxels are the series in acquisition order; else the image
    rebuilt from the headers' order (logged). Mosaics and multi-frame files are trusted."""
    import nibabel as nib

    if info.mosaic:
        return image
    geometry = affine_from_headers(info.files)
    if geometry is None:
        log.info("%s: volume order not cross-checked (geometry not classic single-frame)", subject)
        return image
    affine, grid = geometry
    shape = (*grid, info.n_timepoints)
    same_grid = tuple(image.shape) == shape and np.allclose(image.affine, affine, atol=1e-3)
    rebuilt = header_ordered_series(info.files, affine, shape)
    if rebuilt is None:
        log.info("%s: volume order not cross-checked (images off the slice grid)", subject)
        return image
    if not same_grid:
        log.warning(
            "%s: dcm2niix's geometry (shape %s) is not the headers' (shape %s): slices or "
            "volumes were mixed; rebuilding the series from the headers",
            subject,
            tuple(image.shape),
            shape,
        )
        header = image.header.copy()
        header.set_data_dtype(np.float32)
        rebuilt_image = nib.Nifti1Image(rebuilt, affine, header)
        rebuilt_image.set_qform(affine, code=1)
        rebuilt_image.set_sform(affine, code=1)
        return rebuilt_image
    converted = image.get_fdata(dtype=np.float32)
    # dcm2niix may scale (e.g. Philips precise values): fit the linear map between the two
    # value distributions, which a reordering of voxels does not change
    step = max(1, converted.size // 200_000)
    slope, intercept = np.polyfit(
        np.sort(rebuilt.ravel())[::step], np.sort(converted.ravel())[::step], 1
    )
    expected = rebuilt * np.float32(slope) + np.float32(intercept)
    tolerance = 1e-3 * max(float(np.ptp(converted)), 1e-6)
    if np.abs(expected - converted).max() <= tolerance:
        return image
    log.warning(
        "%s: dcm2niix's volume order differs from the acquisition order in the headers "
        "(InstanceNumber not time-major?); using the order from TemporalPositionIdentifier/"
        "AcquisitionNumber/AcquisitionTime and ImagePositionPatient",
        subject,
    )
    header = image.header.copy()
    header.set_data_dtype(np.float32)
    return nib.Nifti1Image(expected.astype(np.float32), image.affine, header)


def _ct_frame_interval(sidecar: dict, info: SeriesInfo, n_volumes: int, subject, dicom_dir):
    """A CT sidecar with RepetitionTime = the frame interval: dcm2niix's value when it gave
    one, else the median interval of the volumes' AcquisitionTime (CT has no TR tag)."""
    if isinstance(sidecar.get("RepetitionTime"), int | float) and sidecar["RepetitionTime"] > 0:
        return sidecar
    onsets = volume_times(info, n_volumes, 0.0)
    if not any(onsets):
        raise SubjectError(
            subject,
            dicom_dir,
            "CT perfusion series has no per-volume AcquisitionTime: the frame interval is "
            "unknown (give the series as NIfTI with a sidecar RepetitionTime)",
        )
    return {**sidecar, "RepetitionTime": round(float(np.median(np.diff(onsets))), 6)}


def convert_dicom_series(
    dicom_dir: str | Path,
    out_nifti: str | Path,
    out_json: str | Path,
    *,
    subject: str,
    series_rule: str = "most_timepoints",
    modality: str = "dsc",
) -> dict:
    """Convert the subject's perfusion series to a 4D NIfTI + de-identified JSON sidecar.

    A DSC series needs EchoTime and RepetitionTime; CT perfusion (``modality`` ``ctp``) has
    neither: its frame interval comes from the volumes' AcquisitionTime (dcm2niix's
    RepetitionTime when it derives one, else the median interval of the volume onsets), and
    its values are HU (dcm2niix keeps the rescale slope and intercept in the NIfTI header).
    Returns the sidecar written. Raises :class:`SubjectError` naming the subject, the folder
    and what was wrong (no dynamic series, dcm2niix failure, a result that is not the series).
    """
    import nibabel as nib

    from bolus.io.checks import check_dicom_series

    dicom_dir = Path(dicom_dir)
    info = select_series(discover_series(dicom_dir, subject), series_rule, subject, dicom_dir)
    check_dicom_series(info, subject, dicom_dir)
    identifiers = identifying_values(info.files)
    with tempfile.TemporaryDirectory(prefix="bolus-dcm2niix-") as tmp:
        staged = Path(tmp) / "in"
        staged.mkdir()
        for i, path in enumerate(info.files):  # only this series' files; inputs untouched
            os.symlink(path.resolve(), staged / f"{i:06d}.dcm")
        converted = Path(tmp) / "out"
        converted.mkdir()
        niftis = _run_dcm2niix(staged, converted, [], subject, dicom_dir)
        if len(niftis) > 1:
            # Philips (and gated) series: a per-slice TriggerTime makes dcm2niix split the
            # series by trigger time; the time axis of a perfusion series is the acquisition
            log.info(
                "%s: dcm2niix split the series in %d; converting again with --ignore_trigger_times",
                subject,
                len(niftis),
            )
            niftis = _run_dcm2niix(
                staged, converted, ["--ignore_trigger_times"], subject, dicom_dir
            )
        if len(niftis) != 1:
            names = ", ".join(p.name for p in niftis) or "nothing"
            raise SubjectError(
                subject,
                dicom_dir,
                f"dcm2niix wrote {len(niftis)} images from series '{info.description}' "
                f"(expected one 4D series; wrote: {names})",
            )
        sidecar_path = niftis[0].with_name(niftis[0].name.split(".nii")[0] + ".json")
        if not sidecar_path.exists():
            raise SubjectError(subject, dicom_dir, "dcm2niix wrote no JSON sidecar")
        sidecar = json.loads(sidecar_path.read_text())
        image = nib.load(niftis[0])
        shape = image.shape
        if len(shape) != 4 or shape[3] < 2:
            raise SubjectError(
                subject,
                dicom_dir,
                f"converted series is not 4D (shape {shape}); expected time points",
            )
        if shape[3] != info.n_timepoints:
            raise SubjectError(
                subject,
                dicom_dir,
                f"dcm2niix wrote {shape[3]} time points but the DICOM series has "
                f"{info.n_timepoints}: data were dropped or scrambled",
            )
        if modality == "ctp":
            sidecar = _ct_frame_interval(sidecar, info, shape[3], subject, dicom_dir)
        for key in ("EchoTime", "RepetitionTime") if modality != "ctp" else ("RepetitionTime",):
            if not isinstance(sidecar.get(key), int | float) or sidecar[key] <= 0:
                raise SubjectError(subject, dicom_dir, f"converted series has no valid {key}")
        image = _checked_volume_order(image, info, subject)
        clean = deidentified_sidecar(sidecar)
        clean["VolumeTiming"] = volume_times(info, shape[3], float(sidecar["RepetitionTime"]))
        slice_timing = clean.get("SliceTiming")
        excitation = float(clean.get("RepetitionTimeExcitation", clean["RepetitionTime"]))
        if slice_timing is not None and (
            len(slice_timing) != image.shape[2] or max(slice_timing) >= excitation
        ):
            log.warning("%s: dropping dcm2niix's SliceTiming (inconsistent with TR)", subject)
            del clean["SliceTiming"]
        if (
            "FrameTimesStart" in sidecar
            or len(set(np.round(np.diff(clean["VolumeTiming"]), 3))) > 1
        ):
            log.info(
                "%s: irregular volume timing (dcm2niix RepetitionTime %.4g s); the time axis is "
                "the volumes' acquisition times: %s",
                subject,
                float(sidecar["RepetitionTime"]),
                clean["VolumeTiming"],
            )
        clean["SourceSeriesDescription"] = info.description
        text = json.dumps(clean, indent=2)
        assert_no_identifiers(text, identifiers, subject, "sidecar JSON")
        header_text = bytes(image.header["descrip"]).decode(errors="ignore")
        header_text += bytes(image.header["db_name"]).decode(errors="ignore")
        assert_no_identifiers(header_text, identifiers, subject, "NIfTI header")
        out_nifti, out_json = Path(out_nifti), Path(out_json)
        atomic.save_image(image, out_nifti)
        atomic.write_text(out_json, text + "\n")
    return clean


def import_nifti_series(
    dsc_nifti: str | Path,
    out_nifti: str | Path,
    out_json: str | Path,
    *,
    subject: str,
    modality: str = "dsc",
) -> dict:
    """Bring a user-supplied 4D NIfTI + BIDS sidecar into the layout, with the same checks.
    The sidecar needs RepetitionTime (the frame interval) and, for DSC (``modality``), the
    EchoTime; CT perfusion has no echo time."""
    import nibabel as nib

    dsc_nifti = Path(dsc_nifti)
    if not dsc_nifti.exists():
        raise SubjectError(subject, dsc_nifti, "DSC NIfTI does not exist")
    sidecar_path = dsc_nifti.with_name(dsc_nifti.name.split(".nii")[0] + ".json")
    if not sidecar_path.exists():
        raise SubjectError(subject, dsc_nifti, f"no JSON sidecar beside it ({sidecar_path.name})")
    try:
        sidecar = json.loads(sidecar_path.read_text())
        image = nib.load(dsc_nifti)
        shape = image.shape
    except (ValueError, OSError, nib.filebasedimages.ImageFileError) as exc:
        raise SubjectError(subject, dsc_nifti, f"cannot read: {exc}") from exc
    if len(shape) != 4 or shape[3] < 2:
        raise SubjectError(subject, dsc_nifti, f"not a 4D series (shape {shape})")
    for key in ("EchoTime", "RepetitionTime") if modality != "ctp" else ("RepetitionTime",):
        if not isinstance(sidecar.get(key), int | float) or sidecar[key] <= 0:
            raise SubjectError(subject, sidecar_path, f"sidecar has no valid {key}")
    clean = deidentified_sidecar(sidecar)
    timing = clean.get("VolumeTiming")
    if not (isinstance(timing, list) and len(timing) == shape[3]):
        clean["VolumeTiming"] = [
            round(k * float(sidecar["RepetitionTime"]), 6) for k in range(shape[3])
        ]
    copy = nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header)
    atomic.save_image(copy, out_nifti)
    atomic.write_json(out_json, clean)
    return clean
