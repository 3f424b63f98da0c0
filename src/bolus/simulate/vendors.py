"""Vendor conventions of a dynamic DICOM export, for the simulator.

The converter must survive what scanners really write. Each convention below changes only
the header fields that differ between vendors; the pixels and the geometry stay those of the
simulation, so a correct conversion gives the same 4D series whatever the convention.

- ``siemens``: classic (non-mosaic) images with **slice-major** InstanceNumber
  (k·T + t + 1: all time points of slice 0, then slice 1, …) and per-slice AcquisitionTime
  offsets of an interleaved acquisition, from which dcm2niix derives SliceTiming.
- ``ge``: no TemporalPositionIdentifier, every file carries the **series start** as
  AcquisitionTime and no slice timing at all (dcm2niix writes no SliceTiming; GE keeps it in
  private tags). Volumes are told apart by AcquisitionNumber only; the time axis is k·TR.
- ``philips``: every slice carries its own **TriggerTime** (0018,1060; its time within the
  TR, ms), which dcm2niix would take as a cardiac-gated series and split unless told
  ``--ignore_trigger_times``.

Enhanced storage (``storage="enhanced"`` of the writers): one multi-frame file; Philips
stores the frames slice by slice, Siemens (frames with per-slice acquisition times), GE and the
default volume by volume; every frame carries its stack, in-stack position and temporal
position index (DimensionIndexValues in that order, as Siemens XA and Philips write them) and
its acquisition time. dcm2niix (v1.0.20260724) stacks the frames of the volume-by-volume
layout in the wrong order; the converter rebuilds them in acquisition order.

Irregular timing (any vendor): ``frame_times_s`` gives every volume's real onset; the
AcquisitionTime of each volume follows it, and dcm2niix, seeing unequal intervals, reports
irregular timing and rewrites RepetitionTime — the converter must take the time axis from the
AcquisitionTimes. :func:`irregular_frames` picks such frames from a finely sampled
simulation, so the truth stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: DICOM Manufacturer of each convention.
MANUFACTURERS = {
    "siemens": "SIEMENS",
    "ge": "GE MEDICAL SYSTEMS",
    "philips": "Philips Medical Systems",
}
VENDORS = tuple(MANUFACTURERS)


def interleaved_slice_times(n_slices: int, tr_s: float) -> np.ndarray:
    """Onset (s, within the TR) of each slice of an interleaved acquisition (0, 2, 4, …, 1,
    3, …), as Siemens and Philips 2D EPI acquire by default."""
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))
    times = np.empty(n_slices)
    times[order] = np.arange(n_slices) * (tr_s / n_slices)
    return times


@dataclass(frozen=True)
class VendorConvention:
    """How one vendor numbers, times and labels the images of a dynamic series."""

    name: str
    slice_major: bool = False
    per_slice_acquisition_time: bool = False
    shared_acquisition_time: bool = False
    temporal_position: bool = True
    per_slice_trigger_time: bool = False
    enhanced_slice_major: bool = False  # enhanced storage: frames slice by slice

    @property
    def manufacturer(self) -> str:
        return MANUFACTURERS[self.name]

    def instance_number(self, t: int, k: int, n_timepoints: int, n_slices: int) -> int:
        if self.slice_major:
            return k * n_timepoints + t + 1
        return t * n_slices + k + 1

    def adjust(self, ds, *, t: int, k: int, volume_start_s: float, series_start_s: float,
               slice_offset_s: float, to_dicom_time) -> None:  # fmt: skip
        """Set the vendor's fields on the dataset of slice ``k`` at time point ``t``."""
        if self.shared_acquisition_time:
            ds.AcquisitionTime = ds.ContentTime = to_dicom_time(series_start_s)
        elif self.per_slice_acquisition_time:
            ds.AcquisitionTime = ds.ContentTime = to_dicom_time(volume_start_s + slice_offset_s)
        if not self.temporal_position and "TemporalPositionIdentifier" in ds:
            del ds.TemporalPositionIdentifier
        if self.per_slice_trigger_time:
            ds.TriggerTime = f"{slice_offset_s * 1000.0:.6g}"


CONVENTIONS = {
    "siemens": VendorConvention("siemens", slice_major=True, per_slice_acquisition_time=True),
    "ge": VendorConvention("ge", shared_acquisition_time=True, temporal_position=False),
    "philips": VendorConvention("philips", per_slice_trigger_time=True, enhanced_slice_major=True),
}


def convention(name: str) -> VendorConvention:
    try:
        return CONVENTIONS[name.lower()]
    except KeyError:
        known = ", ".join(VENDORS)
        raise ValueError(f"unknown vendor convention {name!r} (known: {known})") from None


def irregular_frames(n_fine: int, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_frames`` frames out of ``n_fine`` finely sampled ones with irregular
    spacing (1–3 fine steps, random), starting at 0: a protocol with a variable TR or a
    scanner that pauses. Raises if ``n_fine`` is too short."""
    steps = rng.integers(1, 4, size=n_frames - 1)
    index = np.concatenate([[0], np.cumsum(steps)])
    if index[-1] >= n_fine:
        raise ValueError(f"{n_frames} irregular frames need {index[-1] + 1} fine frames")
    return index
