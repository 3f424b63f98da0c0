"""Can this series be quantified at all? Checks on the converted 4D signal.

Run right after conversion (``bolus.stages.convert_subject``), before motion correction, so
that a series that cannot give perfusion maps fails early with its cause instead of as an
obscure error inside ANTs or the deconvolution:

* at least :data:`MIN_TIMEPOINTS` volumes: 2 steady-state frames that are skipped, 3 of
  baseline, and a bolus passage (first pass ≈ 10–15 s) sampled by at least 5 frames;
* every value finite (NaN/inf in a NIfTI would spread through every later stage);
* DSC-MRI: a magnitude series, positive somewhere and never negative (the concentration
  is −ln(S/S0)/TE); CT: any HU;
* the signal changes over time (a constant series holds no bolus);
* a pre-bolus baseline of at least :data:`MIN_BASELINE_FRAMES` frames in the head's mean
  curve (:func:`bolus.perfusion.concentration.baseline_frames`): S0 (MR) or the baseline HU
  (CT) comes from them; a series started after the bolus arrived cannot be quantified.
"""

from __future__ import annotations

import numpy as np

from bolus.io.errors import SubjectError

MIN_TIMEPOINTS = 10
MIN_BASELINE_FRAMES = 3
#: voxels whose time-mean exceeds this share of the 99th percentile count as head
_HEAD_FRACTION = 0.2


#: a DSC bolus lowers the head's mean signal by 10–40 % (brain ΔR2*·TE); an fMRI or
#: diffusion series, or a phantom, varies by a few percent at most
MIN_DSC_DIP = 0.03
#: a CT bolus raises the head's mean by several HU; 1 HU is below any real enhancement
MIN_CT_RISE_HU = 1.0


def _check_bolus_passage(curve, subject: str, source, modality: str) -> None:
    """Raise when the head's mean curve (3-frame moving average, after the first 2 frames)
    shows no bolus: no dip below its median by :data:`MIN_DSC_DIP` of it (DSC), no departure
    from its median by :data:`MIN_CT_RISE_HU` (CT). The head mean averages hundreds of
    voxels: its noise is far below these thresholds."""
    curve = np.asarray(curve, dtype=float)[2:]
    if curve.size < 5:
        return
    smooth = np.convolve(curve, np.ones(3) / 3, mode="valid")
    level = float(np.median(curve))
    if modality == "dsc":
        dip = level - float(smooth.min())
        if dip > MIN_DSC_DIP * level:
            return
        raise SubjectError(
            subject,
            source,
            f"no bolus passage found: the head's mean signal never drops below its median by "
            f"more than {100 * dip / level:.1f} % (a DSC bolus lowers it by 10–40 %): not a "
            "perfusion series? Check dicom.series",
        )
    excursion = max(float(smooth.max()) - level, level - float(smooth.min()))
    if excursion > MIN_CT_RISE_HU:
        return
    raise SubjectError(
        subject,
        source,
        f"no bolus passage found: the head's mean never departs from its median by more than "
        f"{excursion:.2f} HU (a CT bolus raises it by several HU): not a perfusion series? "
        "Check dicom.series",
    )


def check_signal(data, times_s, subject: str, source, modality: str = "dsc") -> None:
    """Raise :class:`SubjectError` (naming ``subject`` and ``source``) when ``data``
    (X, Y, Z, T) cannot be quantified; see the module docstring for the conditions."""
    from bolus.perfusion.concentration import baseline_frames

    data = np.asarray(data)
    if data.ndim != 4:
        raise SubjectError(subject, source, f"not a 4D series (shape {data.shape})")
    n = data.shape[-1]
    if n < MIN_TIMEPOINTS:
        raise SubjectError(
            subject,
            source,
            f"only {n} time points; perfusion needs at least {MIN_TIMEPOINTS} "
            "(baseline and the whole first pass of the bolus)",
        )
    # (voxels, T) without a copy, in the series' own memory order (a NIfTI series is
    # Fortran-ordered): every check below is per voxel or over all of them
    flat = data.reshape(-1, n, order="F" if data.flags.f_contiguous else "C")
    if not np.isfinite(flat).all():
        finite = np.isfinite(data)
        bad_voxels = int((~finite).any(axis=-1).sum())
        raise SubjectError(
            subject,
            source,
            f"{int((~finite).sum())} NaN or infinite values in {bad_voxels} voxel(s); "
            "the series must hold finite signal everywhere",
        )
    if modality == "dsc":
        if flat.max() <= 0:
            raise SubjectError(subject, source, "no positive signal: the series is empty")
        negative = int((flat < 0).any(axis=1).sum()) if flat.min() < 0 else 0
        if negative:
            raise SubjectError(
                subject,
                source,
                f"negative signal in {negative} voxel(s): not a magnitude series "
                "(DSC needs S > 0 for −ln(S/S0)/TE)",
            )
    if not np.any(flat.max(axis=1) > flat.min(axis=1)):
        raise SubjectError(
            subject, source, "the signal is constant over time: no bolus passage to quantify"
        )
    mean = flat.mean(axis=1)
    head = mean > _HEAD_FRACTION * np.percentile(mean, 99) if modality == "dsc" else mean > -500
    curve = flat[head].mean(axis=0) if head.any() else flat.mean(axis=0)
    _check_bolus_passage(curve, subject, source, modality)
    baseline = baseline_frames(curve, np.asarray(times_s, dtype=float))
    frames = baseline.stop - baseline.start
    if frames < MIN_BASELINE_FRAMES:
        t = np.asarray(times_s, dtype=float)
        raise SubjectError(
            subject,
            source,
            f"no pre-bolus baseline: the bolus has arrived by volume {baseline.stop} "
            f"(t = {t[min(baseline.stop, n - 1)]:.1f} s), leaving {frames} baseline frame(s); "
            f"at least {MIN_BASELINE_FRAMES} are needed. Start the acquisition before "
            "the injection",
        )
