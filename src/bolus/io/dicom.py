"""DICOM: series discovery and selection, conversion with dcm2niix, de-identification.

A subject's folder may hold any number of series under any file names. We read the
headers (never the pixels) with pydicom, group files by SeriesInstanceUID, pick the
perfusion series, hand *only its files* to dcm2niix, then check what dcm2niix wrote:
it exits 0 even when it splits, scrambles or drops data.

No patient identifier survives: the sidecar JSON keeps only acquisition parameters,
and every identifier value read from the DICOM headers is searched for in what we write.
"""

from __future__ import annotations

import io
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
    r"|Date|StudyID|StudyDescription|StudyInstanceUID|SeriesInstanceUID|ProcedureStep|BidsGuess)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Frame:
    """One 2D image of a series: a classic single-frame file, or frame ``frame`` (0-based)
    of an enhanced multi-frame file (its per-frame functional groups read)."""

    path: Path
    frame: int
    position: tuple  # ImagePositionPatient (LPS mm), as written
    temporal: int | None  # TemporalPositionIndex / -Identifier, else AcquisitionNumber
    time_s: float | None  # acquisition time of day (s)
    echo_time_ms: float | None
    repetition_time_ms: float | None
    instance: int = 0
    stack: str = ""


@dataclass
class SeriesInfo:
    """What the headers say about one series in a folder (classic or enhanced storage)."""

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
    frames: list[Frame] = field(default_factory=list)
    enhanced: bool = False
    #: (orientation, pixel spacing (row, column), rows, columns) of every image
    geometry: set = field(default_factory=set)
    #: (path, pixel data offset, expected pixel bytes or None, file size) per file
    file_sizes: list = field(default_factory=list)
    #: files of the folder scanned that are not this series' (other series, non-DICOM)
    others: int = 0

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def n_images(self) -> int:
        """2D images: frames of enhanced files, else files."""
        return max(len(self.frames), self.n_files)

    @property
    def n_slices(self) -> int:
        return max(len(self.positions), 1)

    @property
    def n_timepoints(self) -> int:
        """Volumes in the series: images per slice position, or the number of temporal
        positions when more (mosaics: one file per volume)."""
        if self.mosaic:
            return self.n_files
        by_images = self.n_images // self.n_slices
        return max(by_images, len(self.temporal_indices) if len(self.temporal_indices) > 1 else 1)

    @property
    def is_dynamic(self) -> bool:
        return self.n_timepoints > 1

    def summary(self) -> str:
        label = self.description or f"series {self.number}"
        points = "time point" if self.n_timepoints == 1 else "time points"
        images = "image" if self.n_images == 1 else "images"
        storage = (
            f"enhanced, {self.n_files} file{'s' if self.n_files > 1 else ''}, "
            if self.enhanced
            else ""
        )
        return f"{label} ({storage}{self.n_images} {images}, {self.n_timepoints} {points})"


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


def _datetime_seconds(value) -> float | None:
    """DICOM DT (YYYYMMDDHHMMSS.ffffff&ZZXX) → seconds since midnight of its day."""
    text = re.split(r"[+-]", str(value or "").strip())[0]
    return _seconds_of_day(text[8:]) if len(text) > 8 else None


def _number(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _item(group, keyword):
    """First item of sequence ``keyword`` in a functional group item, or None."""
    if group is None:
        return None
    seq = group.get(keyword)
    return seq[0] if seq else None


def _functional(frame_group, shared_group, sequence: str, keyword: str):
    """``keyword`` of functional-group ``sequence``: the frame's own, else the shared one."""
    for group in (frame_group, shared_group):
        item = _item(group, sequence)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _expected_pixel_bytes(ds) -> int | None:
    """Size of uncompressed pixel data from the header; None when compressed or unknown."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return None
    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    return rows * cols * frames * samples * bits // 8


_TAGS: dict[str, int] = {}


def _strings(ds, keyword: str) -> list[str] | None:
    """The values of a text element (DS, IS, TM, UI, CS) as strings, straight from the
    bytes read (pydicom's value conversion costs more than reading the file); None if
    absent or empty."""
    tag = _TAGS.get(keyword)
    if tag is None:
        from pydicom.datadict import tag_for_keyword

        tag = _TAGS[keyword] = tag_for_keyword(keyword)
    element = ds.get_item(tag)
    if element is None:
        return None
    value = element.value
    if isinstance(value, bytes):
        parts = [v.strip(" \0") for v in value.decode("latin-1").split("\\")]
    elif value is None:
        return None
    elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        parts = [str(v).strip() for v in value]
    else:
        parts = [str(value).strip()]
    return parts if any(parts) else None


def _floats(ds, keyword: str) -> tuple[float, ...] | None:
    parts = _strings(ds, keyword)
    try:
        return tuple(float(v) for v in parts) if parts else None
    except ValueError:
        return None


def _first_float(ds, keyword: str) -> float | None:
    values = _floats(ds, keyword)
    return values[0] if values else None


def _frames_of(ds, path: Path) -> tuple[list[Frame], set]:
    """The 2D images of one file and their geometry: the file itself (classic storage) or
    every frame of its per-frame functional groups (enhanced storage: PS3.3 C.7.6.16)."""
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    n_frames = int(_first_float(ds, "NumberOfFrames") or 1)
    instance = int(_first_float(ds, "InstanceNumber") or 0)
    if n_frames <= 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        temporal = _first_float(ds, "TemporalPositionIdentifier") or _first_float(
            ds, "AcquisitionNumber"
        )
        orientation = _floats(ds, "ImageOrientationPatient")
        spacing = _floats(ds, "PixelSpacing")
        geometry = set()
        if orientation is not None and spacing is not None:
            geometry.add(
                (tuple(round(v, 4) for v in orientation), tuple(round(v, 4) for v in spacing),
                 rows, columns)
            )  # fmt: skip
        time = _strings(ds, "AcquisitionTime")
        frame = Frame(
            path=path,
            frame=0,
            position=_floats(ds, "ImagePositionPatient") or (),
            temporal=int(temporal) if temporal is not None else None,
            time_s=_seconds_of_day(time[0]) if time else None,
            echo_time_ms=_first_float(ds, "EchoTime"),
            repetition_time_ms=_first_float(ds, "RepetitionTime"),
            instance=instance,
        )
        return [frame], geometry
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    frames, geometry = [], set()
    series_time = _seconds_of_day(ds.get("AcquisitionTime")) or _datetime_seconds(
        ds.get("AcquisitionDateTime")
    )
    for index in range(n_frames):
        group = per_frame[index] if per_frame and index < len(per_frame) else None
        content = _item(group, "FrameContentSequence")
        temporal = content.get("TemporalPositionIndex") if content is not None else None
        when = None
        if content is not None:
            when = _datetime_seconds(content.get("FrameAcquisitionDateTime"))
        position = _functional(group, shared, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _functional(
            group, shared, "PlaneOrientationSequence", "ImageOrientationPatient"
        )
        spacing = _functional(group, shared, "PixelMeasuresSequence", "PixelSpacing")
        if orientation is not None and spacing is not None:
            geometry.add(
                (tuple(round(float(v), 4) for v in orientation),
                 tuple(round(float(v), 4) for v in spacing), rows, columns)
            )  # fmt: skip
        echo = _functional(group, shared, "MREchoSequence", "EffectiveEchoTime")
        tr = _functional(group, shared, "MRTimingAndRelatedParametersSequence", "RepetitionTime")
        frames.append(
            Frame(
                path=path,
                frame=index,
                position=tuple(float(v) for v in position) if position is not None else (),
                temporal=int(temporal) if temporal not in (None, "") else None,
                time_s=when if when is not None else series_time,
                echo_time_ms=_number(echo if echo is not None else ds.get("EchoTime")),
                repetition_time_ms=_number(tr if tr is not None else ds.get("RepetitionTime")),
                instance=instance,
                stack=str(content.get("StackID", "")) if content is not None else "",
            )
        )
    return frames, geometry


_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF


class _Unparsable(Exception):
    """The quick scan does not handle this file; pydicom reads it."""


class _RawValue:
    __slots__ = ("value",)

    def __init__(self, value: bytes):
        self.value = value


class _QuickHeader:
    """The top-level elements of a classic explicit-VR little-endian DICOM file up to group
    0x0028 (image pixel description: everything the series pass reads of a classic file),
    found by scanning its bytes (values kept as bytes, sequences skipped), and the offset of
    its pixel data element: what the series pass reads from every file of a large series at
    a fraction of a full parse. The groups after 0x0028 (vendors' private groups, often most
    of the header) are not walked: the pixel data element is found from the file's end,
    where its tag, VR and a length equal to the header's image size identify it. A file of
    several frames is left to pydicom (enhanced storage). Anything unusual (other transfer
    syntaxes, implicit-VR contents) raises :class:`_Unparsable`."""

    LAST_GROUP = 0x0028

    file_meta = None
    _US = {"Rows": 0x00280010, "Columns": 0x00280011, "BitsAllocated": 0x00280100,
           "SamplesPerPixel": 0x00280002}  # fmt: skip

    def __init__(self, data: bytes):
        import struct

        self._unpack = struct.unpack_from
        if data[128:132] != b"DICM":
            raise _Unparsable("no preamble")
        self.values: dict[int, bytes] = {}
        position = self._elements(data, 132, len(data), top=True, meta_only=True)
        syntax = self.values.get(0x00020010, b"").decode("latin-1").strip(" \0")
        if syntax != _EXPLICIT_LITTLE:
            raise _Unparsable(f"transfer syntax {syntax}")
        self._elements(data, position, len(data), top=True, meta_only=False)
        self.offset = self._pixel_offset(data)

    def _pixel_offset(self, data: bytes) -> int:
        """Where the pixel data element starts: its tag, an OB/OW VR and a length that is
        the image size the header gives (or undefined), searched from the end."""
        if _PIXEL_DATA in self.values:  # the walk reached it (no group after 0x0028)
            return self._pixel_at
        size = _expected_pixel_bytes(self)
        at = len(data)
        while True:
            at = data.rfind(b"\xe0\x7f\x10\x00", 132, at)
            if at < 0:
                raise _Unparsable("no pixel data element")
            if data[at + 4 : at + 8] in (b"OB\0\0", b"OW\0\0") and at + 12 <= len(data):
                (length,) = self._unpack("<I", data, at + 8)
                if length in (size, _UNDEFINED):
                    self.values[_PIXEL_DATA] = b""
                    return at

    def _elements(self, data, position, end, *, top, meta_only=False, until_item_end=False):
        unpack = self._unpack
        while position + 8 <= end:
            group, element = unpack("<HH", data, position)
            tag = group << 16 | element
            if meta_only and group != 0x0002:
                return position
            if tag == 0xFFFEE00D and until_item_end:  # item delimiter
                return position + 8
            if top and tag == _PIXEL_DATA:
                self.values[tag] = b""
                self._pixel_at = position
                return position
            if top and not meta_only and group > self.LAST_GROUP:
                return position
            vr = data[position + 4 : position + 6]
            if vr in _LONG_VRS:
                (length,) = unpack("<I", data, position + 8)
                start = position + 12
            elif vr.isalpha() and vr.isupper():
                (length,) = unpack("<H", data, position + 6)
                start = position + 8
            else:
                raise _Unparsable("implicit VR element")
            if length == _UNDEFINED:
                if vr != b"SQ":
                    raise _Unparsable("undefined length outside a sequence")
                position = self._skip_sequence(data, start)
            else:
                if top:
                    self.values[tag] = data[start : start + length]
                position = start + length
        if until_item_end:
            raise _Unparsable("ended early")
        return position

    def _skip_sequence(self, data, position):
        unpack = self._unpack
        while position + 8 <= len(data):
            group, element = unpack("<HH", data, position)
            (length,) = unpack("<I", data, position + 4)
            if (group, element) == (0xFFFE, 0xE0DD):
                return position + 8
            if (group, element) != (0xFFFE, 0xE000):
                raise _Unparsable("not an item")
            if length == _UNDEFINED:
                position = self._elements(data, position + 8, len(data), top=False,
                                          until_item_end=True)  # fmt: skip
            else:
                position += 8 + length
        raise _Unparsable("sequence not closed")

    def get_item(self, tag: int):
        value = self.values.get(tag)
        return None if value is None else _RawValue(value)

    def __contains__(self, keyword: str) -> bool:
        from pydicom.datadict import tag_for_keyword

        return tag_for_keyword(keyword) in self.values

    def get(self, keyword: str, default=None):
        if keyword in self._US:
            value = self.values.get(self._US[keyword])
            return self._unpack("<H", value)[0] if value and len(value) >= 2 else default
        parts = _strings(self, keyword)
        return "\\".join(parts) if parts else default

    def __getattr__(self, keyword: str):
        if keyword.startswith("_"):
            raise AttributeError(keyword)
        value = self.get(keyword)
        if value is None:
            raise AttributeError(keyword)
        return value


def _add_file(series: dict, ds, path: Path, offset: int) -> None:
    uid = (_strings(ds, "SeriesInstanceUID") or [""])[0]
    info = series.get(uid)
    if info is None:
        info = series[uid] = SeriesInfo(
            uid=uid,
            number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
            description=str(ds.get("SeriesDescription", "")),
            modality=str(ds.get("Modality", "")),
        )
    info.files.append(path)
    info.file_sizes.append((path, offset, _expected_pixel_bytes(ds), path.stat().st_size))
    info.mosaic = info.mosaic or "MOSAIC" in [v.upper() for v in _strings(ds, "ImageType") or []]
    frames, geometry = _frames_of(ds, path)
    info.enhanced = info.enhanced or "PerFrameFunctionalGroupsSequence" in ds
    info.frames.extend(frames)
    info.geometry |= geometry
    for frame in frames:
        if frame.position:
            info.positions.add(tuple(round(v, 2) for v in frame.position))
        if info.echo_time_ms is None:
            info.echo_time_ms = frame.echo_time_ms
        if info.repetition_time_ms is None:
            info.repetition_time_ms = frame.repetition_time_ms
        if frame.temporal is not None:
            info.temporal_indices.add(frame.temporal)
            if frame.time_s is not None:
                previous = info.acquisition_times.get(frame.temporal)
                info.acquisition_times[frame.temporal] = (
                    frame.time_s if previous is None else min(previous, frame.time_s)
                )


def series_of_files(files, subject: str = "", where=None) -> list[SeriesInfo]:
    """Read the headers (never the pixels) of ``files`` and group them by series; files
    that are not DICOM images (READMEs, DICOMDIR, presentation states, raw data) are
    ignored. One pass: everything the checks need is kept (frames, geometry, file sizes)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, SeriesInfo] = {}
    files = list(files)
    for path in files:
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read() if path.stat().st_size <= 1 << 20 else None
                ds = None
                if data is not None and series:  # a series' later files: the quick scan
                    try:
                        ds = _QuickHeader(data)
                        offset = ds.offset
                        uid = (_strings(ds, "SeriesInstanceUID") or [""])[0]
                        if uid not in series or int(ds.get("NumberOfFrames") or 1) > 1:
                            ds = None  # a new series or enhanced storage: read it in full
                    except (_Unparsable, IndexError, ValueError):
                        ds = None
                if ds is None:
                    source = io.BytesIO(data) if data is not None else fh
                    ds = pydicom.dcmread(source, stop_before_pixels=True)
                    offset = source.tell()
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "SeriesInstanceUID" not in ds or "Rows" not in ds:
            continue  # DICOMDIR, presentation states, structured reports, raw data
        try:
            _add_file(series, ds, path, offset)
        except (TypeError, ValueError, AttributeError) as exc:
            raise SubjectError(subject, path, f"unreadable DICOM header: {exc}") from exc
    for info in series.values():
        info.others = len(files) - info.n_files
    return sorted(series.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))


def discover_series(folder: str | Path, subject: str = "") -> list[SeriesInfo]:
    """Read every DICOM header under ``folder`` (recursively) and group by series.

    Files that are not DICOM (READMEs, DICOMDIR, thumbnails) are ignored. Classic storage
    (one image per file) and enhanced multi-frame storage (one file, many frames, with
    per-frame functional groups: plane position, temporal position index, frame
    acquisition time, echo time) are read alike: a series is its 2D images, whatever the
    files that hold them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SubjectError(subject, folder, "DICOM folder does not exist")
    return series_of_files(sorted(p for p in folder.rglob("*") if p.is_file()), subject, folder)


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


#: header fields whose text describes the scanner, the protocol or the series, never a
#: person: an identifier field holding the same text (StationName = ManufacturerModelName,
#: an anonymised PatientName = SeriesDescription, PatientID = SequenceName) identifies nobody
_DESCRIPTIVE_TAGS = (
    "Manufacturer",
    "ManufacturerModelName",
    "SeriesDescription",
    "SequenceName",
    "PulseSequenceName",
    "SoftwareVersions",
    "BodyPartExamined",
    "StudyDescription",
    "Modality",
)
#: what anonymisers write in place of an identifier
_PLACEHOLDERS = {"anonymous", "anonymized", "anonymised", "anon", "unknown", "none", "removed",
                 "deidentified", "de-identified", "patient", "subject", "phantom", "test"}  # fmt: skip

# The sidecar keeps only these keys (dcm2niix's BIDS names for acquisition parameters);
# other keys survive only with a numeric value and a name that does not identify.
_SIDECAR_KEEP = frozenset(
    """Modality MagneticFieldStrength ImagingFrequency Manufacturer ManufacturersModelName
    SoftwareVersions BodyPartExamined PatientPosition MRAcquisitionType SeriesDescription
    ProtocolName ImageComments ScanningSequence SequenceVariant ScanOptions SequenceName
    PulseSequenceName PulseSequenceDetails InternalPulseSequenceName ImageType ImageTypeText
    NonlinearGradientCorrection SeriesNumber AcquisitionTime AcquisitionNumber SliceThickness
    SpacingBetweenSlices SAR EchoTime RepetitionTime RepetitionTimeExcitation FlipAngle
    PartialFourier BaseResolution ShimSetting TxRefAmp PhaseResolution ReceiveCoilName
    ReceiveCoilActiveElements CoilString CoilCombinationMethod MatrixCoilMode PercentPhaseFOV
    PercentSampling EchoTrainLength PhaseEncodingSteps AcquisitionMatrixPE ReconMatrixPE
    BandwidthPerPixelPhaseEncode EffectiveEchoSpacing DerivedVendorReportedEchoSpacing
    TotalReadoutTime EstimatedEffectiveEchoSpacing EstimatedTotalReadoutTime PixelBandwidth
    DwellTime PhaseEncodingDirection PhaseEncodingAxis InPlanePhaseEncodingDirectionDICOM
    SliceEncodingDirection SliceTiming MultibandAccelerationFactor
    ParallelReductionFactorInPlane ParallelReductionFactorOutOfPlane ParallelAcquisitionTechnique
    ConversionSoftware ConversionSoftwareVersion FrameTimesStart FrameDuration AcquisitionDuration
    ImageOrientationPatientDICOM ImageOrientationText InversionTime EchoNumber WaterFatShift
    PhilipsRescaleSlope PhilipsRescaleIntercept PhilipsScaleSlope UsePhilipsFloatNotDisplayScaling
    SpoilingState MTState AcquisitionMode ExposureTime XRayTubeCurrent XRayExposure KVP
    ConvolutionKernel ReconstructionDiameter DataCollectionDiameter GantryDetectorTilt
    TableHeight TableSpeed SpiralPitchFactor CTDIvol Exposure ExposureModulationType
    ReconstructionMethod DoseLengthProduct RawImage PhaseEncodingPolarityGE""".split()
)
#: sidecar keys written by the converter itself, not copied from a DICOM header
_CONVERTER_KEYS = frozenset({"ConversionSoftware", "ConversionSoftwareVersion", "VolumeTiming"})


def _normalised(text) -> str:
    return re.sub(r"[\^\s]+", " ", str(text)).strip().lower()


def _specific(value: str) -> bool:
    """Whether ``value`` is specific enough to identify: ≥ 4 characters, not a placeholder,
    and, when all digits, ≥ 6 of them (a 4-digit number matches any count or time)."""
    text = _normalised(value)
    if len(text) < 4 or text in _PLACEHOLDERS:
        return False
    return not (text.isdigit() and len(text) < 6)


def identifying_values(files: list[Path], limit: int = 5) -> dict[str, str]:
    """Identifier values (name, ID, birth date, institution, ...) in a few of ``files``,
    each mapped to the DICOM keyword it came from (never logged or reported: only the
    keyword is). Values that are also the scanner, sequence or series text of the same
    header (e.g. StationName = ManufacturerModelName) and values too short or generic to
    identify anyone are left out; a PatientName's components are searched too, unless one
    is a word of that text or of the ProtocolName."""
    import pydicom

    values: dict[str, str] = {}
    for path in list(files)[:limit]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        descriptive = {_normalised(ds.get(tag, "")) for tag in _DESCRIPTIVE_TAGS} - {""}
        protocol_words = set(
            re.findall(r"\w+", " ".join(descriptive | {_normalised(ds.get("ProtocolName", ""))}))
        )
        for tag in IDENTIFYING_TAGS:
            value = str(ds.get(tag, "") or "").strip()
            if not _specific(value) or _normalised(value) in descriptive:
                continue
            values.setdefault(value, tag)
            if tag == "PatientName":
                # a single name component that is a word of the protocol or scanner text
                # ('Test^Regression' in 'DCM2NIIX regression test') is that text; the whole
                # name is still searched
                for part in re.split(r"[\^ ]+", value):
                    if _specific(part) and _normalised(part) not in protocol_words:
                        values.setdefault(part, tag)
    return values


def deidentified_sidecar(sidecar: dict) -> dict:
    """The dcm2niix sidecar with acquisition parameters only: the keys of an allow-list,
    and other keys only when their value is a number (or numbers) and their name does not
    name a person, site, device or exam date. Free text under an unknown key is dropped."""

    def numeric(value) -> bool:
        if isinstance(value, list):
            return all(numeric(v) for v in value)
        return isinstance(value, int | float) and not isinstance(value, bool)

    return {
        k: v
        for k, v in sidecar.items()
        if not _SIDECAR_DROP.search(k) and (k in _SIDECAR_KEEP or numeric(v))
    }


def _pattern(value: str) -> re.Pattern:
    """``value`` as a whole word, case-insensitive; a PatientName's ``^`` also matches the
    space or comma a converter may write in its place."""
    parts = [re.escape(p) for p in re.split(r"[\^ ]+", value.strip()) if p]
    return re.compile(r"(?<!\w)" + r"[\^\s,]+".join(parts) + r"(?!\w)", re.IGNORECASE)


def identifier_hits(record, identifiers) -> list[tuple[str, str]]:
    """(source DICOM keyword, output key) for every identifier value found in ``record``:
    a dict (searched key by key, strings and lists of strings only; keys the converter
    writes itself skipped) or a text (key ``""``). ``identifiers``: value → keyword (or a
    set of values, keyword unknown)."""
    sources = identifiers if isinstance(identifiers, dict) else dict.fromkeys(identifiers, "")
    if isinstance(record, dict):
        fields = {}
        for key, value in record.items():
            if key in _CONVERTER_KEYS:
                continue
            items = value if isinstance(value, list) else [value]
            texts = [str(v) for v in items if isinstance(v, str)]
            if texts:
                fields[key] = "\n".join(texts)
    else:
        fields = {"": str(record)}
    hits = set()
    for value, tag in sources.items():
        pattern = _pattern(value)
        for key, text in fields.items():
            if pattern.search(text):
                hits.add((tag or "an identifying tag", key))
    return sorted(hits)


def assert_no_identifiers(text, identifiers, subject: str, what) -> None:
    """Raise :class:`SubjectError` when an identifier value would reach an output.

    ``text``: the output, a dict, JSON text of a dict (searched key by key) or plain text
    (e.g. a NIfTI header field). The message names the DICOM tag the value came from and
    the output key it was found in, never the value."""
    record = text
    if isinstance(text, str) and text.lstrip().startswith("{"):
        try:
            record = json.loads(text)
        except ValueError:
            record = text
    hits = identifier_hits(record, identifiers)
    if hits:
        places = "; ".join(
            f"{tag} in {what} key {key!r}" if key else f"{tag} in {what}" for tag, key in hits
        )
        raise SubjectError(
            subject,
            what,
            f"patient identifiers would reach the output ({len(hits)} field(s)): {places}. "
            "Remove the identifier from that DICOM field (or anonymise the export) and rerun",
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


#: dcm2niix's grid and the one rebuilt from the headers are the same when no voxel centre
#: moves by more than this fraction of the smallest voxel edge. The two differ by rounding
#: only (0.005–0.013 mm on real GE and Philips series: dcm2niix averages the slice
#: positions, the headers' DS values have 6–10 digits); a mixed, missing or duplicated
#: slice moves voxels by a whole slice.
GEOMETRY_TOLERANCE_VOXELS = 0.1
#: the order check reads every image of a series up to this many images, else a sample:
#: every volume (one slice each, rotating) plus every slice of the first and last volume
ORDER_CHECK_ALL_IMAGES = 1000


def _as_series(files_or_info) -> SeriesInfo | None:
    if isinstance(files_or_info, SeriesInfo):
        return files_or_info
    found = series_of_files(list(files_or_info))
    return max(found, key=lambda s: s.n_images) if found else None


def _exact_positions(info: SeriesInfo) -> dict[tuple, np.ndarray]:
    """Rounded slice position → ImagePositionPatient as written (first image's)."""
    positions: dict[tuple, np.ndarray] = {}
    for frame in info.frames:
        if frame.position:
            positions.setdefault(
                tuple(round(v, 2) for v in frame.position), np.asarray(frame.position)
            )
    return positions


def affine_from_headers(files) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """RAS affine and (columns, rows, slices) of a series (classic files, enhanced frames, or
    the :class:`SeriesInfo` of either) from its headers, in dcm2niix's convention (i =
    column, j = row reversed, k = slices along the normal ascending); None if the images do
    not share one orientation and pixel grid, or lack the geometry."""
    info = _as_series(files)
    if info is None or info.mosaic or len(info.geometry) != 1:
        return None
    positions = _exact_positions(info)
    if not positions or any(not f.position for f in info.frames):
        return None
    orientation, (row_spacing, column_spacing), rows, columns = next(iter(info.geometry))
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    ordered = sorted(positions.values(), key=lambda p: float(np.dot(normal, p)))
    along = np.array([np.dot(normal, p) for p in ordered])
    step = float(np.median(np.diff(along))) if len(ordered) > 1 else 1.0
    lps = np.eye(4)
    lps[:3, 0] = row_dir * column_spacing
    lps[:3, 1] = -col_dir * row_spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = np.asarray(ordered[0]) + col_dir * row_spacing * (rows - 1)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, (columns, rows, len(ordered))


def _acquisition_order(info: SeriesInfo) -> dict[tuple, list[Frame]]:
    """Each slice position's images in acquisition order: (temporal position, acquisition
    time, InstanceNumber, frame), never InstanceNumber alone: a slice-major numbering (all
    time points of a slice, then the next slice) must not scramble the volumes."""
    by_position: dict[tuple, list[Frame]] = {}
    for frame in info.frames:
        by_position.setdefault(tuple(round(v, 2) for v in frame.position), []).append(frame)
    for frames in by_position.values():
        frames.sort(
            key=lambda f: (f.temporal or 0, f.time_s or 0.0, f.instance, str(f.path), f.frame)
        )
    return by_position


def _voxel_indices(frame: Frame, geometry, inverse: np.ndarray, shape) -> tuple | None:
    """(i, j, k) index arrays (rows × columns) of ``frame``'s pixels in the grid of
    ``inverse`` (inverse RAS affine) and ``shape``; None when its pixels fall off the
    voxel centres (by more than :data:`GEOMETRY_TOLERANCE_VOXELS`) or outside the grid."""
    orientation, (row_spacing, column_spacing), rows, columns = geometry
    orientation = np.asarray(orientation, float)
    r, c = np.indices((rows, columns))
    world = (
        np.asarray(frame.position, float)
        + (c * column_spacing)[..., None] * orientation[:3]
        + (r * row_spacing)[..., None] * orientation[3:]
    ) * np.array([-1.0, -1.0, 1.0])
    index = world @ inverse[:3, :3].T + inverse[:3, 3]
    rounded = np.rint(index).astype(int)
    if np.abs(index - rounded).max() > GEOMETRY_TOLERANCE_VOXELS:
        return None
    if (rounded < 0).any() or (rounded >= np.asarray(shape[:3])).any():
        return None
    return rounded[..., 0], rounded[..., 1], rounded[..., 2]


class _PixelReader:
    """Rescaled pixel values (stored × RescaleSlope + RescaleIntercept, per frame for
    enhanced files) of a series' images, each file read once and kept while used."""

    def __init__(self, rescaled: bool = True):
        self._path = None
        self._ds = None
        self._pixels = None
        self._rescaled = rescaled

    def _classic(self, path: Path) -> np.ndarray | None:
        """An uncompressed classic file's rescaled pixels straight from its bytes (the quick
        header scan gives the pixel data offset); None where pydicom must read it."""
        try:
            data = path.read_bytes()
            header = _QuickHeader(data)
            rows, columns = header.get("Rows"), header.get("Columns")
            bits, signed = header.get("BitsAllocated"), header.values.get(0x00280103, b"\0\0")
            if header.get("SamplesPerPixel", 1) != 1 or bits not in (8, 16) or not rows:
                return None
            if "NumberOfFrames" in header and int(header.get("NumberOfFrames")) > 1:
                return None
            dtype = np.dtype(("<i" if signed[:2] == b"\1\0" else "<u") + str(bits // 8))
            start = header.offset + 12
            pixels = np.frombuffer(data, dtype, rows * columns, start).reshape(rows, columns)
        except (_Unparsable, ValueError, TypeError, IndexError):
            return None
        if not self._rescaled:
            return pixels
        slope = _first_float(header, "RescaleSlope")
        inter = _first_float(header, "RescaleIntercept")
        return pixels.astype(np.float64) * (1.0 if slope is None else slope) + (inter or 0.0)

    def __call__(self, frame: Frame) -> np.ndarray:
        import pydicom

        if frame.frame == 0 and frame.path != self._path:
            pixels = self._classic(frame.path)
            if pixels is not None:
                return pixels
        if frame.path != self._path:
            self._ds = pydicom.dcmread(frame.path)
            self._pixels = self._ds.pixel_array
            self._path = frame.path
        ds = self._ds
        pixels = self._pixels[frame.frame] if self._pixels.ndim == 3 else self._pixels
        if not self._rescaled:
            return pixels
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame:
            group = per_frame[frame.frame]
            shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
            slope = _functional(group, shared, "PixelValueTransformationSequence", "RescaleSlope")
            inter = _functional(
                group, shared, "PixelValueTransformationSequence", "RescaleIntercept"
            )
        else:
            slope, inter = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        slope, inter = _number(slope), _number(inter)
        return pixels.astype(np.float64) * (1.0 if slope is None else slope) + (inter or 0.0)


def header_ordered_series(
    files, affine: np.ndarray, shape, stored: bool = False
) -> np.ndarray | None:
    """The series rebuilt from the DICOM pixels in acquisition order (:func:`_acquisition_order`)
    in the grid of ``affine`` (RAS) and ``shape`` (x, y, z, t): classic files or enhanced
    frames (``files`` may be a :class:`SeriesInfo`); None where that cannot be done
    (mosaics, missing geometry, images off the grid, a slice position without ``t`` images).
    Each image goes where its pixels' world coordinates fall. Values: stored ×
    RescaleSlope + RescaleIntercept (float32), or with ``stored`` the stored values (int32)."""
    info = _as_series(files)
    if info is None or info.mosaic or len(shape) != 4 or len(info.geometry) != 1:
        return None
    geometry = next(iter(info.geometry))
    inverse = np.linalg.inv(np.asarray(affine, float))
    by_position = _acquisition_order(info)
    if {len(v) for v in by_position.values()} != {shape[3]}:
        return None
    out = np.zeros(shape, dtype=np.int32 if stored else np.float32)
    filled = np.zeros(shape[2:], dtype=int)
    read = _PixelReader(rescaled=not stored)
    frames = sorted(
        ((t, f) for images in by_position.values() for t, f in enumerate(images)),
        key=lambda item: (str(item[1].path), item[1].frame),
    )  # file by file: each file read once
    placements: dict[tuple, tuple] = {}
    for t, frame in frames:
        key = tuple(round(v, 2) for v in frame.position)
        if key not in placements:
            where = _voxel_indices(frame, geometry, inverse, shape)
            placements[key] = None if where is None else (*where, np.unique(where[2]))
        where = placements[key]
        if where is None:
            return None
        pixels = read(frame)
        if pixels.shape != where[0].shape:
            return None
        i, j, k, slices = where
        out[i, j, k, t] = pixels
        filled[slices, t] += 1
    if not (filled == 1).all():
        return None
    return out


def _same_values(stored: np.ndarray, raw: np.ndarray) -> bool:
    """Whether the integers ``stored`` are the values of ``raw`` (an integer array), in any
    order: equal once sorted (radix sort for 8- and 16-bit data)."""
    if stored.size != raw.size or stored.min() != raw.min() or stored.max() != raw.max():
        return False
    ours = stored.astype(raw.dtype).ravel()  # in range: min and max are raw's
    return bool(np.array_equal(np.sort(ours, kind="stable"), np.sort(raw.ravel(), kind="stable")))


def _corner_shift_mm(a: np.ndarray, b: np.ndarray, shape) -> float:
    """Largest distance (mm) between the world positions the two affines give the corner
    voxels of a grid of ``shape``."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((a @ corners - b @ corners)[:3], axis=0).max())


def _sampled_images(by_position: dict, n_volumes: int) -> list[tuple[int, Frame]]:
    """(volume, image) pairs to compare with the converted series: all of them for a small
    series, else one slice per volume (rotating through the slices) and every slice of
    the first and last volume."""
    positions = sorted(by_position)
    n_images = sum(len(v) for v in by_position.values())
    if n_images <= ORDER_CHECK_ALL_IMAGES:
        return [(t, f) for key in positions for t, f in enumerate(by_position[key])]
    picks = {(t, positions[t % len(positions)]) for t in range(n_volumes)}
    picks |= {(t, key) for key in positions for t in (0, n_volumes - 1)}
    return sorted(
        ((t, by_position[key][t]) for t, key in picks), key=lambda p: (str(p[1].path), p[1].frame)
    )


def _same_image(converted: np.ndarray, dicom: np.ndarray, quantum: float) -> bool:
    """Whether ``converted`` is ``dicom`` up to a linear map of values (dcm2niix may rescale
    a series, e.g. Philips floating-point values), within half a stored step ``quantum``
    plus float32 rounding."""
    x, y = dicom.ravel().astype(np.float64), converted.ravel().astype(np.float64)
    if np.ptp(x) == 0:
        return bool(np.ptp(y) <= quantum)
    design = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = np.abs(design @ np.array([slope, intercept]) - y).max()
    return bool(residual <= 0.5 * quantum + 1e-5 * max(np.abs(y).max(), 1.0))


def _verified_against_headers(nifti: Path, info: SeriesInfo, subject: str, workdir: Path) -> Path:
    """dcm2niix's image ``nifti`` if its grid is the headers' (within
    :data:`GEOMETRY_TOLERANCE_VOXELS`) and its voxels are the images in acquisition order
    (all images or a sample compared, :func:`_sampled_images`); else the series rebuilt
    from the headers, in dcm2niix's data type and scaling (logged, with the reason).
    Mosaics, and series whose headers do not give one grid, are not cross-checked."""
    import nibabel as nib

    from bolus.io.nifti import save_raw

    if info.mosaic:
        return nifti
    geometry = affine_from_headers(info)
    if geometry is None:
        log.info(
            "%s: volume order not cross-checked (no single image grid in the headers)", subject
        )
        return nifti
    header_affine, grid = geometry
    shape = (*grid, info.n_timepoints)
    image = nib.load(nifti)
    voxel = float(np.sqrt((header_affine[:3, :3] ** 2).sum(axis=0)).min())
    tolerance_mm = GEOMETRY_TOLERANCE_VOXELS * voxel
    shift = (
        _corner_shift_mm(image.affine, header_affine, grid) if image.shape[:3] == grid else np.inf
    )
    by_position = _acquisition_order(info)
    read = _PixelReader()
    raw = np.asanyarray(image.dataobj.get_unscaled())
    slope, inter = image.dataobj.slope, image.dataobj.inter
    quantum = abs(float(slope)) if raw.dtype.kind in "iu" else 0.0
    if tuple(image.shape) == shape and shift <= tolerance_mm:
        inverse = np.linalg.inv(image.affine)
        geometry_key = next(iter(info.geometry))
        mismatched = 0
        placements: dict = {}
        for t, frame in _sampled_images(by_position, shape[3]):
            key = tuple(round(v, 2) for v in frame.position)
            if key not in placements:
                placements[key] = _voxel_indices(frame, geometry_key, inverse, shape)
            where = placements[key]
            if where is None:
                log.info("%s: volume order not cross-checked (images off the slice grid)", subject)
                return nifti
            converted = raw[where[0], where[1], where[2], t] * float(slope) + float(inter)
            if not _same_image(converted, read(frame), quantum):
                mismatched += 1
        if not mismatched:
            return nifti
        reason = (
            f"{mismatched} image(s) are not where the acquisition order (temporal position, "
            "acquisition time) puts them: dcm2niix ordered the volumes otherwise (by "
            "InstanceNumber or by a non-temporal dimension index)"
        )
        affine = image.affine
    else:
        reason = (
            f"dcm2niix's grid (shape {tuple(image.shape)}) is not the headers' (shape {shape}, "
            f"corner shift {shift:.3g} mm > {tolerance_mm:.3g} mm): slices or volumes were "
            "missing, duplicated or mixed"
        )
        affine = header_affine
    stored = header_ordered_series(info, affine, shape, stored=True)
    if stored is None:
        raise SubjectError(
            subject, info.files[0].parent,
            f"{reason}, and the series cannot be rebuilt from its headers (images off the slice "
            "grid or missing): re-export the series",
        )  # fmt: skip
    log.warning(
        "%s: %s; rebuilding the series from the headers (TemporalPositionIdentifier/"
        "AcquisitionNumber/AcquisitionTime and ImagePositionPatient), in dcm2niix's scaling",
        subject,
        reason,
    )
    if raw.dtype.kind in "iu" and _same_values(stored, raw):
        # dcm2niix stored the DICOM values as they are (its scaling in the header): the
        # rebuild is its own values, reordered, with its scaling
        out_raw, out_slope, out_inter = stored.astype(raw.dtype), float(slope), float(inter)
    else:
        # dcm2niix's values are a linear map of the DICOM values (e.g. Philips floating-point
        # scaling); a reordering keeps the value distribution
        rebuilt = header_ordered_series(info, affine, shape)
        converted = raw.astype(np.float64) * float(slope) + float(inter)
        levels = np.linspace(0.0, 1.0, 201)
        ours, theirs = np.quantile(rebuilt, levels), np.quantile(converted, levels)
        a, b = 1.0, 0.0
        if np.ptp(ours) and not np.allclose(ours, theirs, rtol=0, atol=1e-6 * np.abs(theirs).max()):
            a, b = np.polyfit(ours, theirs, 1)
        values = rebuilt.astype(np.float64) * a + b
        out_raw, out_slope, out_inter = values.astype(np.float32), 1.0, 0.0
    rebuilt_path = workdir / f"rebuilt{''.join(nifti.suffixes)}"
    save_raw(out_raw, image.header, affine, rebuilt_path, out_slope, out_inter)
    return rebuilt_path


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
        staged = dicom_dir  # the folder holds this series only: dcm2niix reads it in place
        if info.others:  # else only this series' files, linked (inputs untouched)
            staged = Path(tmp) / "in"
            staged.mkdir()
            for i, path in enumerate(info.files):
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
        result = _verified_against_headers(niftis[0], info, subject, Path(tmp))
        image = nib.load(result)
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
        assert_no_identifiers(clean, identifiers, subject, "sidecar JSON")
        header_fields = {
            key: bytes(image.header[key]).decode(errors="ignore")
            for key in ("descrip", "db_name", "aux_file", "intent_name")
        }
        assert_no_identifiers(header_fields, identifiers, subject, "NIfTI header")
        sidecar_out = Path(tmp) / "sidecar.json"
        sidecar_out.write_text(json.dumps(clean, indent=2) + "\n")
        # both outputs appear together, only once everything above has accepted them
        atomic.install({sidecar_out: out_json, result: out_nifti})
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
    from bolus.io.nifti import save_raw

    with tempfile.TemporaryDirectory(prefix="bolus-import-") as tmp:
        # the stored values and their scaling as given: nibabel would re-derive the scaling
        staged = Path(tmp) / "series.nii.gz"
        proxy = image.dataobj
        raw = (
            np.asanyarray(proxy.get_unscaled())
            if hasattr(proxy, "get_unscaled")
            else np.asanyarray(proxy)
        )
        slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
        header = image.header if isinstance(image.header, nib.Nifti1Header) else nib.Nifti1Header()
        save_raw(raw, header, image.affine, staged, slope, inter)
        sidecar_out = Path(tmp) / "sidecar.json"
        sidecar_out.write_text(json.dumps(clean, indent=2) + "\n")
        atomic.install({sidecar_out: out_json, staged: out_nifti})
    return clean
