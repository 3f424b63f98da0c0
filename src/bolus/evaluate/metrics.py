"""Agreement of a perfusion map with its reference, inside a mask.

Every function takes ``pred, ref, mask`` (3D arrays of one shape; ``mask`` boolean, or
numeric with voxels > 0.5 inside) and returns a float. Definitions (README, "Units and
conventions"):

* MAE = mean |pred − ref|, RMSE = √mean (pred − ref)², PCC = Pearson correlation, SCC =
  Spearman rank correlation (Pearson correlation of the ranks, ties given their average
  rank), all over the mask's voxels;
* NRMSE = ‖pred − ref‖₂ / ‖ref‖₂ over the mask's voxels (so a uniform 10 % overestimate
  gives 0.1);
* SSIM and PSNR on the 3D volume cropped to the mask's bounding box, with
  data range = max − min of the reference inside the mask, or the ``data_range`` given:
  the subject tables pass one range per map and subject, the reference's over the brain
  (:func:`data_range`), to every region, as the published comparisons do (a region's own
  range made PSNR of a narrow-ranged region such as grey-matter CBF read below 0 dB).
  Voxels of the box outside the mask are set to 0 in both volumes, so they agree there
  and only the mask's content (and its edge against 0) is compared. PSNR =
  10·log10(range² / MSE) over the whole box.

Failed or partial methods (NaN / ±inf voxels, in ``pred`` or ``ref``)
----------------------------------------------------------------------
Metrics are computed on the *valid* voxels only: inside the mask and finite in both
maps. For SSIM/PSNR invalid voxels are set to 0 in both volumes, like voxels outside the
mask. How much was left out is reported by :func:`finite_fraction` (a metric of its own
in the subject tables), so a method that fails on half the brain cannot hide behind good
scores on the other half. When no voxel is valid every metric is NaN. Nothing here
raises on bad values or emits numpy warnings.

Degenerate cases: identical maps give PSNR = +inf (MSE 0) and SSIM 1; NRMSE is NaN when
‖ref‖ = 0; PCC and SCC are NaN when either map is constant on the valid voxels; SSIM/PSNR
are NaN when the reference is constant in the mask (range 0) unless the maps are identical.

Regional means (:func:`regional_means`: the mean of each map over the valid voxels, in
map units) are what Bland–Altman and scatter plots of a study compare.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

METRIC_NAMES = ("mae", "rmse", "nrmse", "ssim", "psnr", "pcc", "scc")
#: Largest SSIM window (skimage's default, 7 voxels a side).
SSIM_MAX_WINDOW = 7


def as_mask(mask: np.ndarray) -> np.ndarray:
    """Boolean mask: boolean arrays as they are, numeric ones as ``mask > 0.5``."""
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 0.5


def _check(pred, ref, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    mask = as_mask(mask)
    if not (pred.shape == ref.shape == mask.shape):
        raise ValueError(
            f"shapes differ: prediction {pred.shape}, reference {ref.shape}, mask {mask.shape}; "
            "resample the reference onto the prediction grid first (bolus.io.nifti.resample_to_grid)"
        )
    return pred, ref, mask


def valid_voxels(pred, ref, mask) -> np.ndarray:
    """Mask voxels where both maps are finite: the voxels every metric is computed on."""
    pred, ref, mask = _check(pred, ref, mask)
    return mask & np.isfinite(pred) & np.isfinite(ref)


def _pairs(pred, ref, mask) -> tuple[np.ndarray, np.ndarray]:
    pred, ref, mask = _check(pred, ref, mask)
    valid = mask & np.isfinite(pred) & np.isfinite(ref)
    return pred[valid], ref[valid]


def finite_fraction(pred, ref, mask) -> float:
    """Fraction of mask voxels where both maps are finite (1.0 for a complete map;
    NaN for an empty mask)."""
    pred, ref, mask = _check(pred, ref, mask)
    n = int(mask.sum())
    if n == 0:
        return float("nan")
    return float((mask & np.isfinite(pred) & np.isfinite(ref)).sum() / n)


def mae(pred, ref, mask) -> float:
    """Mean absolute error over the valid mask voxels (map units)."""
    p, r = _pairs(pred, ref, mask)
    return float(np.mean(np.abs(p - r))) if p.size else float("nan")


def rmse(pred, ref, mask) -> float:
    """Root-mean-square error over the valid mask voxels (map units)."""
    p, r = _pairs(pred, ref, mask)
    return float(np.sqrt(np.mean((p - r) ** 2))) if p.size else float("nan")


def nrmse(pred, ref, mask) -> float:
    """‖pred − ref‖₂ / ‖ref‖₂ over the valid mask voxels (NaN when ‖ref‖ = 0)."""
    p, r = _pairs(pred, ref, mask)
    norm = np.linalg.norm(r)
    if p.size == 0 or norm == 0:
        return float("nan")
    return float(np.linalg.norm(p - r) / norm)


def _correlation(p: np.ndarray, r: np.ndarray) -> float:
    """Pearson correlation of two 1D samples (NaN below 2 values or for a constant one)."""
    if p.size < 2:
        return float("nan")
    dp, dr = p - p.mean(), r - r.mean()
    denom = np.sqrt((dp**2).sum() * (dr**2).sum())
    if denom == 0:
        return float("nan")
    return float(np.clip((dp * dr).sum() / denom, -1.0, 1.0))


def pcc(pred, ref, mask) -> float:
    """Pearson correlation over the valid mask voxels (NaN when either map is constant)."""
    return _correlation(*_pairs(pred, ref, mask))


def scc(pred, ref, mask) -> float:
    """Spearman rank correlation over the valid mask voxels: the Pearson correlation of the
    ranks (ties share their average rank); NaN when either map is constant."""
    p, r = _pairs(pred, ref, mask)
    if p.size < 2:
        return float("nan")
    return _correlation(rankdata(p), rankdata(r))


def regional_means(pred, ref, mask) -> tuple[float, float]:
    """(mean of pred, mean of ref) over the valid mask voxels, in map units (NaN, NaN when
    no voxel is valid)."""
    p, r = _pairs(pred, ref, mask)
    if p.size == 0:
        return float("nan"), float("nan")
    return float(p.mean()), float(r.mean())


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel (None for an empty mask)."""
    mask = as_mask(mask)
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def data_range(ref, mask) -> float:
    """max − min of the reference's finite values inside ``mask`` (NaN when none): the one
    data range of SSIM and PSNR per map and subject (``mask`` = the brain)."""
    ref = np.asarray(ref, dtype=np.float64)
    values = ref[as_mask(mask) & np.isfinite(ref)]
    return float(values.max() - values.min()) if values.size else float("nan")


def _boxed(pred, ref, mask, range_=None) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Both maps cropped to the mask's box, invalid voxels zeroed, and the data range
    (``range_``, or the reference's in the mask when None)."""
    pred, ref, mask = _check(pred, ref, mask)
    valid = mask & np.isfinite(pred) & np.isfinite(ref)
    box = bounding_box(mask)
    if box is None or not valid.any():
        return None
    keep = valid[box]
    p = np.where(keep, pred[box], 0.0)
    r = np.where(keep, ref[box], 0.0)
    if range_ is not None and np.isfinite(range_):
        return p, r, float(range_)
    values = ref[valid]
    return p, r, float(values.max() - values.min())


def ssim_window(shape: tuple[int, ...]) -> int | None:
    """SSIM window: the largest odd size ≤ 7 that fits the smallest axis of ``shape``
    (axes shorter than 3 voxels are not windowed, see :func:`ssim`); None below 3.

    A 12-slice brain box gets skimage's default 7; a 5-slice box 5; a 3-slice box 3.
    """
    smallest = min(shape) if shape else 0
    if smallest < 3:
        return None
    return min(SSIM_MAX_WINDOW, smallest if smallest % 2 else smallest - 1)


def ssim(pred, ref, mask, data_range: float | None = None) -> float:
    """Structural similarity on the mask's bounding box (3D; window by :func:`ssim_window`).

    ``skimage.metrics.structural_similarity`` with ``data_range`` (default: the
    reference's range in the mask) and uniform windows. Axes of the box shorter than 3 voxels (a one- or
    two-slice mask) cannot hold a window: SSIM is then the mean over those slices of the
    SSIM of the remaining axes (2D per slice). NaN when fewer than two axes reach 3 voxels.
    """
    boxed = _boxed(pred, ref, mask, data_range)
    if boxed is None:
        return float("nan")
    p, r, data_range = boxed
    if np.array_equal(p, r):
        return 1.0
    if data_range == 0:
        return float("nan")
    thin = [a for a in range(p.ndim) if p.shape[a] < 3]
    wide = [a for a in range(p.ndim) if p.shape[a] >= 3]
    if len(wide) < 2:
        return float("nan")
    # move the thin axes to the front and loop over their index combinations
    order = thin + wide
    p = np.transpose(p, order).reshape((-1,) + tuple(p.shape[a] for a in wide))
    r = np.transpose(r, order).reshape(p.shape)
    win = ssim_window(p.shape[1:])
    values = [
        structural_similarity(p[i], r[i], data_range=data_range, win_size=win)
        for i in range(p.shape[0])
    ]
    return float(np.mean(values))


def psnr(pred, ref, mask, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio (dB) on the mask's bounding box:
    10·log10(range² / MSE) (``skimage.metrics.peak_signal_noise_ratio`` with ``data_range``,
    default the reference's range in the mask). +inf for identical maps; NaN when the range
    is 0 and the maps differ."""
    boxed = _boxed(pred, ref, mask, data_range)
    if boxed is None:
        return float("nan")
    p, r, data_range = boxed
    if np.array_equal(p, r):
        return float("inf")
    if data_range == 0:
        return float("nan")
    return float(peak_signal_noise_ratio(r, p, data_range=data_range))


def map_metrics(pred, ref, mask, data_range: float | None = None) -> dict[str, float]:
    """All agreement metrics of one map: keys ``mae rmse nrmse ssim psnr pcc scc``;
    ``data_range`` of SSIM and PSNR (None: the reference's range in ``mask``)."""
    return {
        "mae": mae(pred, ref, mask),
        "rmse": rmse(pred, ref, mask),
        "nrmse": nrmse(pred, ref, mask),
        "ssim": ssim(pred, ref, mask, data_range),
        "psnr": psnr(pred, ref, mask, data_range),
        "pcc": pcc(pred, ref, mask),
        "scc": scc(pred, ref, mask),
    }
