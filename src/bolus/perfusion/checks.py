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
    finite = np.isfinite(data)
    if not finite.all():
        bad_voxels = int((~finite).any(axis=-1).sum())
        raise SubjectError(
            subject,
            source,
            f"{int((~finite).sum())} NaN or infinite values in {bad_voxels} voxel(s); "
            "the series must hold finite signal everywhere",
        )
    if modality == "dsc":
        if data.max() <= 0:
            raise SubjectError(subject, source, "no positive signal: the series is empty")
        negative = int((data < 0).any(axis=-1).sum())
        if negative:
            raise SubjectError(
                subject,
                source,
                f"negative signal in {negative} voxel(s): not a magnitude series "
                "(DSC needs S > 0 for −ln(S/S0)/TE)",
            )
    flat = data.reshape(-1, n)
    if not np.any(flat.max(axis=1) > flat.min(axis=1)):
        raise SubjectError(
            subject, source, "the signal is constant over time: no bolus passage to quantify"
        )
    mean = flat.mean(axis=1)
    head = mean > _HEAD_FRACTION * np.percentile(mean, 99) if modality == "dsc" else mean > -500
    curve = flat[head].mean(axis=0) if head.any() else flat.mean(axis=0)
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
