"""Write simulated series as real DICOM files (MR Image Storage, pydicom ≥ 3).

One file per slice per time point, explicit VR little endian, a proper file meta header
and deterministic UIDs (``pydicom.uid.generate_uid`` seeded from the exam's entropy string,
so the same seed writes byte-identical files).

Pixels are ``uint16`` holding the simulated magnitude signal rounded to integers (≈ 0–3000
for the phantom's S0 scale), with **no** RescaleSlope/RescaleIntercept: the stored value is
the signal.

Geometry (DICOM patient coordinates, LPS, mm): a DSC volume is an array (i, j, k) with
i = column, j = row, k = slice (see :class:`bolus.simulate.phantom.AcquisitionGrid`);
slice k's image is ``volume[:, :, k].T`` (rows × columns), ImageOrientationPatient
[1, 0, 0, 0, 1, 0], ImagePositionPatient from the grid. InstanceNumber is time-major
(t·n_slices + k + 1), AcquisitionNumber = TemporalPositionIdentifier = t + 1, and every slice
of a volume has that volume's AcquisitionTime (start + t·TR).

Identifiers: every file carries fake but realistic patient and site identifiers — the
keywords in :data:`PHI_TAGS` — which the pipeline must strip. Their values are drawn
deterministically from (seed, subject number) by :func:`synthetic_exam`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from bolus.simulate.phantom import MNI_CENTRE, AcquisitionGrid

#: DICOM keywords that identify the patient or the site (PS3.15 basic profile); every
#: simulated file holds a value for each, and none may survive conversion.
PHI_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StationName",
    "DeviceSerialNumber",
)

_SURNAMES = ("Doe", "Roe", "Moreau", "Okafor", "Tanaka", "Lindqvist", "Castillo", "Novak")
_GIVEN = ("Jane", "John", "Amelie", "Chidi", "Kenji", "Astrid", "Lucia", "Pavel")
_PHYSICIANS = ("Welby^Marcus", "Quinn^Michaela", "Kildare^James", "Grey^Meredith")
_SCANNERS = {  # manufacturer: (model, field strength T, imaging frequency MHz, flip angle °)
    "SIEMENS": ("Avanto", 1.5, 63.676, 90.0),
    "GE MEDICAL SYSTEMS": ("DISCOVERY MR750", 3.0, 127.74, 60.0),
    "Philips Medical Systems": ("Ingenia", 3.0, 127.77, 60.0),
}
_CT_SCANNERS = {"SIEMENS": "SOMATOM Definition AS+", "GE MEDICAL SYSTEMS": "Revolution CT",
                "Philips Medical Systems": "iCT 256"}  # fmt: skip


@dataclass(frozen=True)
class Exam:
    """Everything fixed for one subject's visit: identifiers, scanner, date, UID source."""

    identifiers: dict[str, str]  # PHI_TAGS keyword → value
    patient_sex: str
    study_date: str  # YYYYMMDD
    study_time_s: float  # seconds after midnight at which the localizer is acquired
    manufacturer: str
    uid_entropy: str

    def uid(self, *parts: object) -> str:
        """A UID that depends only on the exam and ``parts``."""
        return generate_uid(entropy_srcs=[self.uid_entropy, *map(str, parts)])

    @property
    def study_instance_uid(self) -> str:
        return self.uid("study")

    @property
    def frame_of_reference_uid(self) -> str:
        return self.uid("frame-of-reference")

    @property
    def scanner(self) -> tuple[str, float, float, float]:
        return _SCANNERS[self.manufacturer]


def synthetic_exam(seed: int, subject_number: int) -> Exam:
    """The exam of simulated subject ``subject_number`` (1-based) of cohort ``seed``.

    Deterministic: identifiers (name, MRN-…, birth date, accession, institution, …), date
    and UIDs depend only on (seed, subject_number). Odd subjects are scanned on a SIEMENS
    1.5 T, even ones on a GE 3 T.
    """
    rng = np.random.default_rng([int(seed) % 2**63, int(subject_number), 0xD1C0])
    sex = str(rng.choice(["F", "M"]))
    birth = np.datetime64("1940-01-01") + np.timedelta64(int(rng.integers(0, 365 * 40)), "D")
    study = np.datetime64("2023-01-02") + np.timedelta64(int(rng.integers(0, 700)), "D")
    manufacturer = "SIEMENS" if subject_number % 2 == 1 else "GE MEDICAL SYSTEMS"
    identifiers = {
        "PatientName": f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN)}",
        "PatientID": f"MRN-{rng.integers(10**6, 10**7)}",
        "PatientBirthDate": str(birth).replace("-", ""),
        "InstitutionName": "Simulated General Hospital",
        "InstitutionAddress": f"{rng.integers(1, 200)} Phantom Lane, Simville",
        "ReferringPhysicianName": str(rng.choice(_PHYSICIANS)),
        "AccessionNumber": f"ACC{rng.integers(10**7, 10**8)}",
        "StationName": f"SIMMR{rng.integers(10, 99)}",
        "DeviceSerialNumber": f"SN-SIM-{rng.integers(1000, 9999)}",
    }
    return Exam(
        identifiers=identifiers,
        patient_sex=sex,
        study_date=str(study).replace("-", ""),
        study_time_s=float(rng.integers(8 * 3600, 17 * 3600)),
        manufacturer=manufacturer,
        uid_entropy=f"bolus-sim/{int(seed)}/{int(subject_number)}",
    )


def _dicom_time(seconds: float) -> str:
    seconds = float(seconds) % 86400.0
    whole = int(seconds)
    micro = int(round((seconds - whole) * 1e6))
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    return f"{whole // 3600:02d}{whole // 60 % 60:02d}{whole % 60:02d}.{micro:06d}"


def _ds(values) -> list[str]:
    """Decimal strings (≤ 16 characters) for multi-valued DS attributes."""
    return [f"{float(v):.10g}" for v in values]


def _base_dataset(
    exam: Exam, series_number: int, description: str, series_time_s: float
) -> Dataset:
    model, field_t, frequency, _ = exam.scanner
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = exam.study_date
    ds.StudyTime = _dicom_time(exam.study_time_s)
    ds.SeriesTime = _dicom_time(series_time_s)
    ds.Modality = "MR"
    ds.Manufacturer = exam.manufacturer
    ds.ManufacturerModelName = model
    for keyword, value in exam.identifiers.items():
        setattr(ds, keyword, value)
    ds.PatientSex = exam.patient_sex
    ds.StudyDescription = "MR HEAD PERFUSION"
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.BodyPartExamined = "HEAD"
    ds.MagneticFieldStrength = field_t
    ds.ImagingFrequency = frequency
    ds.ImagedNucleus = "1H"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = exam.study_instance_uid
    ds.SeriesInstanceUID = exam.uid("series", series_number)
    ds.FrameOfReferenceUID = exam.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_number)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def _save(ds: Dataset, path: Path, image: np.ndarray) -> None:
    pixels = np.ascontiguousarray(np.clip(np.rint(image), 0, 65535).astype("<u2"))
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def _save_slice(ds, stem: Path, exam, series_number, instance, grid, k, image) -> Path:
    """Save slice ``k`` (``image`` (i, j)) of a dynamic series as instance ``instance``:
    ``<stem>_<series>_<instance>.dcm``, its position from the grid."""
    position = grid.slice_position_lps(k)
    ds.InstanceNumber = instance
    ds.SOPInstanceUID = exam.uid("image", series_number, instance)
    ds.ImagePositionPatient = _ds(position)
    ds.SliceLocation = f"{position[2]:.10g}"
    path = stem.with_name(f"{stem.name}_{series_number:03d}_{instance:05d}.dcm")
    _save(ds, path, image.T)
    return path


#: Enhanced MR / CT Image Storage (one file, many frames, per-frame functional groups)
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
#: ``storage`` values of the series writers
STORAGES = ("classic", "enhanced")
#: attributes of a classic image that live in functional groups in enhanced storage
_PER_FRAME_ATTRIBUTES = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                         "EchoTime", "RepetitionTime", "FlipAngle", "AcquisitionNumber",
                         "TemporalPositionIdentifier", "SliceLocation", "RescaleIntercept",
                         "RescaleSlope", "RescaleType", "TriggerTime", "SliceThickness",
                         "SpacingBetweenSlices")  # fmt: skip


def _item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _enhanced_file(ds: Dataset, path: Path, frames: list[dict], *, sop_class: str, shared: Dataset,
                   exam: Exam, series_number: int, instance: int) -> Path:  # fmt: skip
    """Write ``frames`` (dicts: image (rows × columns), position, k, t, time_s) as one
    enhanced multi-frame file: per-frame FrameContent (StackID, InStackPositionNumber,
    TemporalPositionIndex, FrameAcquisitionDateTime, DimensionIndexValues) and
    PlanePosition; the rest shared (PS3.3 C.7.6.16)."""
    import copy

    out = copy.deepcopy(ds)
    for keyword in _PER_FRAME_ATTRIBUTES:
        if keyword in out:
            delattr(out, keyword)
    out.file_meta.MediaStorageSOPClassUID = out.SOPClassUID = sop_class
    out.ImageType = [*list(ds.ImageType)[:3], "NONE"]
    out.InstanceNumber = instance
    out.SOPInstanceUID = exam.uid("image", series_number, "enhanced", instance)
    out.NumberOfFrames = len(frames)
    out.ContentQualification = "PRODUCT"
    out.AcquisitionDateTime = exam.study_date + _dicom_time(min(f["time_s"] for f in frames))
    organization = exam.uid("dimensions", series_number)
    out.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=organization)]
    # as Siemens XA and Philips write them: stack, position in the stack, time point
    dimensions = [(0x00209056, "Stack ID", 0), (0x00209057, "In-Stack Position Number", 1),
                  (0x00209128, "Temporal Position Index", 2)]  # fmt: skip
    out.DimensionIndexSequence = [
        _item(DimensionOrganizationUID=organization, DimensionIndexPointer=pointer,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel=label)
        for pointer, label, _ in dimensions
    ]  # fmt: skip
    out.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for frame in frames:
        content = _item(
            StackID="1",
            InStackPositionNumber=frame["k"] + 1,
            TemporalPositionIndex=frame["t"] + 1,
            FrameAcquisitionDateTime=exam.study_date + _dicom_time(frame["time_s"]),
            FrameReferenceDateTime=exam.study_date + _dicom_time(frame["time_s"]),
            FrameAcquisitionDuration=100.0,
            DimensionIndexValues=[(1, frame["k"] + 1, frame["t"] + 1)[i] for _, _, i in dimensions],
        )
        per_frame.append(
            _item(FrameContentSequence=[content],
                  PlanePositionSequence=[_item(ImagePositionPatient=_ds(frame["position"]))])
        )  # fmt: skip
    out.PerFrameFunctionalGroupsSequence = per_frame
    stack = np.stack([np.clip(np.rint(f["image"]), 0, 65535) for f in frames]).astype("<u2")
    out.Rows, out.Columns = stack.shape[1:]
    out.PixelData = np.ascontiguousarray(stack).tobytes()
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.save_as(path, enforce_file_format=True)
    return path


def _shared_groups(ds: Dataset, grid, *, mr: bool) -> Dataset:
    shared = _item(
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        PixelMeasuresSequence=[_item(PixelSpacing=_ds([grid.pixel_spacing_mm] * 2),
                                     SliceThickness=f"{grid.slice_thickness_mm:.6g}",
                                     SpacingBetweenSlices=f"{grid.slice_spacing_mm:.6g}")],
    )  # fmt: skip
    if mr:
        shared.MREchoSequence = [_item(EffectiveEchoTime=float(ds.EchoTime))]
        shared.MRTimingAndRelatedParametersSequence = [
            _item(RepetitionTime=float(ds.RepetitionTime), FlipAngle=float(ds.FlipAngle),
                  EchoTrainLength=int(ds.EchoTrainLength))
        ]  # fmt: skip
    else:
        shared.PixelValueTransformationSequence = [
            _item(RescaleIntercept=ds.RescaleIntercept, RescaleSlope=ds.RescaleSlope,
                  RescaleType=ds.RescaleType)
        ]  # fmt: skip
    return shared


def _write_enhanced_series(folder: Path, stem: str, ds: Dataset, frames: list[dict], *,
                           sop_class: str, grid, exam: Exam, series_number: int,
                           mr: bool) -> list[Path]:  # fmt: skip
    """``frames`` in the order to store them, as one enhanced file; returns ``[path]``."""
    path = folder / f"{stem}_{series_number:03d}_00001.dcm"
    shared = _shared_groups(ds, grid, mr=mr)
    return [_enhanced_file(ds, path, frames, sop_class=sop_class, shared=shared, exam=exam,
                           series_number=series_number, instance=1)]  # fmt: skip


def write_dsc_series(
    folder,
    signal: np.ndarray,
    grid: AcquisitionGrid,
    *,
    tr_s: float,
    te_s: float,
    exam: Exam,
    series_number: int = 2,
    description: str = "ep2d_perf",
    start_time_s: float | None = None,
    vendor: str | None = None,
    frame_times_s=None,
    storage: str = "classic",
) -> list[Path]:
    """Write the dynamic series ``signal`` (i, j, k, t) into ``folder``; returns the files.

    ``storage`` ``classic``: MR Image Storage, one file per slice per time point;
    ``enhanced``: Enhanced MR Image Storage, the images as frames with per-frame functional
    groups (plane position, temporal position index, frame acquisition time), stored as the
    vendor convention does (:mod:`bolus.simulate.vendors`: Philips frames slice by slice,
    Siemens, GE and the default volume by volume).

    Values are rounded and clipped to uint16. ``start_time_s`` (seconds after midnight) is
    the AcquisitionTime of volume 0, by default 5 minutes after the exam's start.
    ``vendor`` (``siemens``, ``ge``, ``philips``; see :mod:`bolus.simulate.vendors`) writes
    that vendor's numbering and timing fields; ``frame_times_s`` (T,) the real onset of every
    volume (s from the first) when the timing is irregular (default: t·TR).
    """
    import dataclasses

    from bolus.simulate.vendors import convention, interleaved_slice_times

    conv = convention(vendor) if vendor else None
    if conv is not None:
        exam = dataclasses.replace(exam, manufacturer=conv.manufacturer)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz, nt = signal.shape
    if (nx, ny, nz) != tuple(grid.shape):
        raise ValueError(f"signal of shape {signal.shape} does not fit grid {grid.shape}")
    start = exam.study_time_s + 300.0 if start_time_s is None else float(start_time_s)
    _, _, _, flip = exam.scanner
    ds = _base_dataset(exam, series_number, description, start)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "PERFUSION", "ND"]
    ds.ScanningSequence = "EP"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = "FS"
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "*epfid2d1_64" if exam.manufacturer == "SIEMENS" else "EPI"
    ds.AngioFlag = "N"
    ds.SliceThickness = f"{grid.slice_thickness_mm:.6g}"
    ds.SpacingBetweenSlices = f"{grid.slice_spacing_mm:.6g}"
    ds.RepetitionTime = f"{tr_s * 1000:.6g}"
    ds.EchoTime = f"{te_s * 1000:.6g}"
    ds.NumberOfAverages = 1
    ds.EchoNumbers = 1
    ds.EchoTrainLength = ny
    ds.NumberOfPhaseEncodingSteps = ny
    ds.PercentSampling = 100
    ds.PercentPhaseFieldOfView = 100
    ds.PixelBandwidth = 1502
    ds.FlipAngle = flip
    ds.InPlanePhaseEncodingDirection = "COL"
    ds.AcquisitionMatrix = [0, nx, ny, 0]
    ds.NumberOfTemporalPositions = nt
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = _ds([grid.pixel_spacing_mm] * 2)
    ds.ImagesInAcquisition = nz

    onsets = np.arange(nt) * tr_s if frame_times_s is None else np.asarray(frame_times_s, float)
    if onsets.shape != (nt,):
        raise ValueError(f"frame_times_s has shape {onsets.shape}, the series has {nt} frames")
    slice_offsets = interleaved_slice_times(nz, tr_s)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if storage == "enhanced":
        per_slice_time = conv is not None and conv.per_slice_acquisition_time
        frames = [
            {"image": signal[:, :, k, t].T, "position": grid.slice_position_lps(k), "k": k,
             "t": t, "time_s": start + onsets[t] + (slice_offsets[k] if per_slice_time else 0.0)}
            for t in range(nt) for k in range(nz)
        ]  # fmt: skip
        slice_major = conv is not None and conv.enhanced_slice_major
        if slice_major:
            frames.sort(key=lambda f: (f["k"], f["t"]))
        return _write_enhanced_series(
            folder, "IM", ds, frames,
            sop_class=ENHANCED_MR_IMAGE_STORAGE, grid=grid, exam=exam,
            series_number=series_number, mr=True,
        )  # fmt: skip
    paths = []
    for t in range(nt):
        acquired = _dicom_time(start + onsets[t])
        ds.AcquisitionNumber = t + 1
        ds.TemporalPositionIdentifier = t + 1
        ds.AcquisitionTime = ds.ContentTime = acquired
        for k in range(nz):
            instance = t * nz + k + 1
            if conv is not None:
                instance = conv.instance_number(t, k, nt, nz)
                conv.adjust(
                    ds,
                    t=t,
                    k=k,
                    volume_start_s=start + onsets[t],
                    series_start_s=start,
                    slice_offset_s=float(slice_offsets[k]),
                    to_dicom_time=_dicom_time,
                )
            paths.append(
                _save_slice(ds, folder / "IM", exam, series_number, instance, grid, k,
                            signal[:, :, k, t])
            )  # fmt: skip
    return paths


#: CT Image Storage; CT pixels are stored as HU + 1024 (uint16) with RescaleIntercept −1024
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CT_RESCALE_INTERCEPT = -1024.0


def write_ctp_series(
    folder,
    hu: np.ndarray,
    grid: AcquisitionGrid,
    *,
    tr_s: float,
    exam: Exam,
    series_number: int = 2,
    description: str = "CTP Brain 5mm",
    start_time_s: float | None = None,
    storage: str = "classic",
) -> list[Path]:
    """Write a CT perfusion series ``hu`` (i, j, k, t; Hounsfield units) into ``folder`` as CT
    Image Storage, one file per slice per time point; returns the files.

    As CT scanners do: Modality CT, no echo or repetition time (the frame interval is only in
    the AcquisitionTime of each volume, ``start_time_s`` + t·``tr_s``), stored value
    HU + 1024 (uint16, HU below −1024 clipped) with RescaleSlope 1 and RescaleIntercept −1024.
    Geometry, numbering and identifiers as :func:`write_dsc_series`; ``storage``
    ``enhanced``: one Enhanced CT Image Storage file (frames time-major, the rescale in the
    shared PixelValueTransformation group).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz, nt = hu.shape
    if (nx, ny, nz) != tuple(grid.shape):
        raise ValueError(f"series of shape {hu.shape} does not fit grid {grid.shape}")
    start = exam.study_time_s + 300.0 if start_time_s is None else float(start_time_s)
    ds = _base_dataset(exam, series_number, description, start)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    ds.ManufacturerModelName = _CT_SCANNERS[exam.manufacturer]
    ds.StudyDescription = "CT HEAD PERFUSION"
    for keyword in ("MagneticFieldStrength", "ImagingFrequency", "ImagedNucleus"):
        delattr(ds, keyword)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = "80"
    ds.XRayTubeCurrent = 150
    ds.ConvolutionKernel = "H20f"
    ds.SliceThickness = f"{grid.slice_thickness_mm:.6g}"
    ds.SpacingBetweenSlices = f"{grid.slice_spacing_mm:.6g}"
    ds.RescaleIntercept = f"{CT_RESCALE_INTERCEPT:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = _ds([grid.pixel_spacing_mm] * 2)
    stored = np.asarray(hu, float) - CT_RESCALE_INTERCEPT
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if storage == "enhanced":  # Enhanced CT Image Storage, one file, time-major frames
        frames = [
            {"image": stored[:, :, k, t].T, "position": grid.slice_position_lps(k), "k": k,
             "t": t, "time_s": start + t * float(tr_s)}
            for t in range(nt) for k in range(nz)
        ]  # fmt: skip
        return _write_enhanced_series(
            folder, "CT", ds, frames, sop_class=ENHANCED_CT_IMAGE_STORAGE,
            grid=grid, exam=exam, series_number=series_number, mr=False,
        )  # fmt: skip
    paths = []
    for t in range(nt):
        ds.AcquisitionNumber = t + 1
        ds.TemporalPositionIdentifier = t + 1
        ds.AcquisitionTime = ds.ContentTime = _dicom_time(start + t * float(tr_s))
        for k in range(nz):
            instance = t * nz + k + 1
            paths.append(
                _save_slice(ds, folder / "CT", exam, series_number, instance, grid, k,
                            stored[:, :, k, t])
            )  # fmt: skip
    return paths


def write_tof_series(
    folder,
    image: np.ndarray,
    grid,
    *,
    exam: Exam,
    series_number: int = 3,
    description: str = "tof_fl3d_tra",
    start_time_s: float | None = None,
) -> list[Path]:
    """Write a 3D TOF-MRA ``image`` (i, j, k) on ``grid`` (an axial
    :class:`~bolus.simulate.phantom.AcquisitionGrid`) as a single-frame MR series, one file
    per slice, into ``folder``; returns the files. Values rounded and clipped to uint16;
    ``start_time_s`` default: 2 minutes after the exam's start (before the DSC run)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = image.shape
    if (nx, ny, nz) != tuple(grid.shape):
        raise ValueError(f"image of shape {image.shape} does not fit grid {grid.shape}")
    start = exam.study_time_s + 120.0 if start_time_s is None else float(start_time_s)
    ds = _base_dataset(exam, series_number, description, start)
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SP", "OSP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = "*fl3d1r_t70" if exam.manufacturer == "SIEMENS" else "TOF3D"
    ds.AngioFlag = "Y"
    ds.SliceThickness = f"{grid.slice_thickness_mm:.6g}"
    ds.SpacingBetweenSlices = f"{grid.slice_spacing_mm:.6g}"
    ds.RepetitionTime = "23"
    ds.EchoTime = "3.6"
    ds.FlipAngle = 18
    ds.NumberOfAverages = 1
    ds.EchoNumbers = 1
    ds.AcquisitionMatrix = [0, nx, ny, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = _ds([grid.pixel_spacing_mm] * 2)
    ds.ImagesInAcquisition = nz
    ds.AcquisitionNumber = 1
    ds.AcquisitionTime = ds.ContentTime = _dicom_time(start)
    paths = []
    for k in range(nz):
        position = grid.slice_position_lps(k)
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = exam.uid("image", series_number, k + 1)
        ds.ImagePositionPatient = _ds(position)
        ds.SliceLocation = f"{position[2]:.10g}"
        path = folder / f"IM_{series_number:03d}_{k + 1:05d}.dcm"
        _save(ds, path, image[:, :, k].T)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Plane:
    """A single-slice image plane in DICOM patient coordinates (LPS, mm)."""

    name: str
    row_direction: tuple[float, float, float]  # along a row: direction of increasing column
    column_direction: tuple[float, float, float]  # down a column: increasing row
    centre_lps: tuple[float, float, float]
    shape: tuple[int, int] = (128, 128)  # rows, columns
    pixel_spacing_mm: float = 2.0
    thickness_mm: float = 8.0

    @property
    def position_lps(self) -> np.ndarray:
        """ImagePositionPatient: centre of the first (top left) pixel."""
        rows, cols = self.shape
        d = self.pixel_spacing_mm
        return (
            np.asarray(self.centre_lps, float)
            - np.asarray(self.row_direction, float) * (cols - 1) / 2 * d
            - np.asarray(self.column_direction, float) * (rows - 1) / 2 * d
        )

    def pixel_centres_lps(self) -> np.ndarray:
        """(rows, columns, 3) patient coordinates of every pixel centre."""
        rows, cols = self.shape
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        d = self.pixel_spacing_mm
        return (
            self.position_lps
            + c[..., None] * d * np.asarray(self.row_direction, float)
            + r[..., None] * d * np.asarray(self.column_direction, float)
        )


def localizer_planes(
    centre_lps=None, size: int = 128, spacing_mm: float = 2.0
) -> tuple[Plane, ...]:
    """The three orthogonal planes (axial, sagittal, coronal) of a 3-plane localizer through
    ``centre_lps`` (default: the simulated field-of-view centre)."""
    if centre_lps is None:
        centre_lps = (-MNI_CENTRE[0], -MNI_CENTRE[1], MNI_CENTRE[2])
    centre = tuple(float(v) for v in centre_lps)
    common = {"centre_lps": centre, "shape": (size, size), "pixel_spacing_mm": spacing_mm}
    return (
        Plane("axial", (1, 0, 0), (0, 1, 0), **common),
        Plane("sagittal", (0, 1, 0), (0, 0, -1), **common),
        Plane("coronal", (1, 0, 0), (0, 0, -1), **common),
    )


def _ellipsoid_head(plane: Plane) -> np.ndarray:
    """A plain head-shaped image (brain inside skull inside scalp) for a plane."""
    p = plane.pixel_centres_lps() - np.asarray(plane.centre_lps)
    radius = np.sqrt(np.sum((p / np.array([70.0, 90.0, 65.0])) ** 2, axis=-1))
    return np.select([radius < 0.85, radius < 0.92, radius < 1.0], [700.0, 60.0, 850.0], 0.0)


def write_localizer_series(
    folder,
    *,
    seed: int = 0,
    subject_number: int = 1,
    exam: Exam | None = None,
    planes: tuple[Plane, ...] | None = None,
    images: list[np.ndarray] | None = None,
    series_number: int = 1,
    description: str = "localizer",
) -> list[Path]:
    """Write a 3-plane localizer (one single-slice image per plane) into ``folder``.

    ``exam`` defaults to ``synthetic_exam(seed, subject_number)`` (so its identifiers are
    those of that simulated subject); ``planes`` to :func:`localizer_planes`; ``images`` (one
    2D array per plane, rows × columns, a.u. ≤ 65535) to plain ellipsoid heads. Usable on its
    own, e.g. to build a DICOM folder that holds no dynamic series. Returns the files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    exam = exam or synthetic_exam(seed, subject_number)
    planes = planes or localizer_planes()
    images = images if images is not None else [_ellipsoid_head(p) for p in planes]
    if len(images) != len(planes):
        raise ValueError(f"{len(images)} localizer images for {len(planes)} planes")
    ds = _base_dataset(exam, series_number, description, exam.study_time_s)
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "*fl2d1"
    ds.RepetitionTime = "8.6"
    ds.EchoTime = "4"
    ds.FlipAngle = 20
    ds.AcquisitionNumber = 1
    ds.AcquisitionTime = ds.ContentTime = _dicom_time(exam.study_time_s)
    paths = []
    for instance, (plane, image) in enumerate(zip(planes, images, strict=True), start=1):
        if np.shape(image) != tuple(plane.shape):
            raise ValueError(
                f"localizer image {instance} has shape {np.shape(image)}, plane {plane.shape}"
            )
        ds.InstanceNumber = instance
        ds.SOPInstanceUID = exam.uid("image", series_number, instance)
        ds.ImageOrientationPatient = _ds(list(plane.row_direction) + list(plane.column_direction))
        ds.ImagePositionPatient = _ds(plane.position_lps)
        ds.PixelSpacing = _ds([plane.pixel_spacing_mm] * 2)
        ds.SliceThickness = f"{plane.thickness_mm:.6g}"
        normal = np.cross(plane.row_direction, plane.column_direction)
        ds.SliceLocation = f"{float(np.dot(normal, plane.position_lps)):.6g}"
        path = folder / f"IM_{series_number:03d}_{instance:05d}.dcm"
        _save(ds, path, np.asarray(image))
        paths.append(path)
    return paths
