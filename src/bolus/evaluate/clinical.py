"""Clinical readouts of perfusion maps, per subject and method, and their agreement.

What a neuroradiology study reports, computed the same way for every method's maps and for
the reference's (config section ``clinical``; every threshold there, with its source):

Reference region (:func:`reference_region`)
    Normal-appearing white matter, the denominator of rCBV and rCBF: the participants.tsv
    ``reference_region_mask`` when given (inside the tissue), else the white matter of the
    subject's tissue labels (:func:`bolus.evaluate.regions.load_tissue_masks`) or of the
    MNI152 white-matter template registered onto the subject; eroded in-plane by
    ``reference_erosion_voxels`` (away from grey-matter and CSF partial volume), inside the
    brain where the reference is defined, kept ``lesion_margin_mm`` away from the lesion
    (user lesion mask and hypoperfusion), and in the hemisphere opposite the lesion when its
    side is known (:func:`lesion_side`); relaxed in that order down to ``reference_min_ml``.
Relative maps (:func:`relative_map`)
    rCBV = CBV / mean CBV of the reference region, rCBF likewise (dimensionless; 1 = normal
    white matter).
Stroke (:func:`stroke_readouts`), over the readout tissue (the brain mask where the reference
    maps are defined, within the tissue mask, i.e. without large vessels and CSF, or within
    the holes of the first method's hypoperfused clusters, which the tissue mask's low-CBV
    rule for CSF would cut out of an ischaemic core; :mod:`bolus.evaluate.clinical_files`),
    volumes in ml from the voxel size:

    * ``core_ml``: CBF < ``core_rcbf_threshold`` (0.3) × the mean CBF of the unaffected
      hemisphere's tissue (the CT perfusion convention of RAPID; the whole tissue when no
      side is known), counted only where Tmax > ``core_tmax_s`` (6 s; null: anywhere);
    * ``tmax_gt<T>s_ml`` for every T of ``hypoperfusion_tmax_s`` (4, 6, 8, 10 s);
    * every Tmax > T region (and so the core inside it) without its connected components
      smaller than ``min_cluster_ml`` (5 ml): SVD overestimates Tmax in noisy low-flow white
      matter, whose scattered voxels are no lesion;
    * ``mismatch_ml`` = Tmax > ``mismatch_tmax_s`` (6 s) volume − core, ``mismatch_ratio``
      = that volume / core (inf when the core is empty and the hypoperfusion is not, NaN
      when both are empty);
    * ``hir`` (hypoperfusion intensity ratio) = Tmax > ``hir_tmax_s`` (10 s) volume / Tmax >
      ``mismatch_tmax_s`` volume (NaN without hypoperfusion);
    * ``target_mismatch`` (1/0): core < ``target_mismatch.core_max_ml`` (70 ml), ratio ≥
      ``ratio_min`` (1.8) and mismatch ≥ ``mismatch_min_ml`` (15 ml): the DEFUSE 3
      profile (Albers et al., NEJM 2018).
Tumour (:func:`tumour_readouts`)
    rCBV in the user lesion mask: ``lesion_rcbv_mean``, ``lesion_rcbv_median``,
    ``lesion_rcbv_p90`` (NaN without a lesion mask).

Agreement with the reference across subjects (:func:`agreement_table`), per method and
readout: Bland–Altman bias (method − reference) and 95 % limits of agreement (bias ± 1.96
SD, ddof 1), ICC(2,1) (two-way random effects, absolute agreement, single measures; Shrout
& Fleiss 1979, :func:`icc_2_1`); for the yes/no ``target_mismatch`` the share of subjects
meeting it (``mean_method``, ``mean_reference``) and the sensitivity and specificity of the
method's decision against the reference's instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bolus.config import section
from bolus.evaluate.lesions import volume_ml
from bolus.evaluate.metrics import as_mask

#: readouts compared with the reference in the agreement table (the Tmax volumes are added
#: from the configured thresholds, see :func:`readout_columns`)
AGREEMENT_READOUTS = (
    "core_ml",
    "mismatch_ml",
    "mismatch_ratio",
    "hir",
    "wm_rcbv",
    "gm_rcbv",
    "wm_rcbf",
    "gm_rcbf",
    "lesion_rcbv_mean",
    "lesion_rcbv_median",
    "lesion_rcbv_p90",
)
AGREEMENT_COLUMNS = (
    "method",
    "reference",
    "readout",
    "n",
    "mean_method",
    "mean_reference",
    "bias",
    "sd_difference",
    "loa_low",
    "loa_high",
    "icc_2_1",
    "sensitivity",
    "specificity",
    "n_positive",
    "n_negative",
)
#: the label of the reference_dir maps' rows in clinical.tsv
REFERENCE_METHOD = "reference"


def tmax_column(threshold_s: float) -> str:
    """``tmax_gt6s_ml`` for 6 s (``tmax_gt2.5s_ml`` for 2.5 s)."""
    return f"tmax_gt{float(threshold_s):g}s_ml"


def tmax_thresholds(clinical: Mapping | None = None) -> list[float]:
    """Every Tmax threshold whose volume is reported: the configured list plus the
    mismatch and HIR thresholds, ascending."""
    s = section("clinical", clinical)
    values = {float(t) for t in s["hypoperfusion_tmax_s"]}
    values |= {float(s["mismatch_tmax_s"]), float(s["hir_tmax_s"])}
    return sorted(values)


def readout_columns(clinical: Mapping | None = None) -> list[str]:
    """The readout columns of clinical.tsv, in order."""
    return [
        "reference_region_ml",
        "reference_cbv",
        "reference_cbf",
        "wm_rcbv",
        "gm_rcbv",
        "wm_rcbf",
        "gm_rcbf",
        "unaffected_cbf",
        "core_ml",
        *[tmax_column(t) for t in tmax_thresholds(clinical)],
        "mismatch_ml",
        "mismatch_ratio",
        "hir",
        "target_mismatch",
        "lesion_rcbv_mean",
        "lesion_rcbv_median",
        "lesion_rcbv_p90",
    ]


# ----------------------------------------------------------------------------- geometry


def world_x(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """RAS world x (mm; it grows towards the subject's right) of every voxel centre."""
    affine = np.asarray(affine, dtype=np.float64)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape[:3]], indexing="ij")
    return affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k + affine[0, 3]


def hemispheres(brain: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """``{"left": mask, "right": mask}``: the brain split at its midline, the plane of
    constant RAS world x through the brain's centroid (the subject's right: x above it)."""
    brain = as_mask(brain)
    x = world_x(brain.shape, affine)
    midline = float(x[brain].mean()) if brain.any() else 0.0
    return {"right": brain & (x > midline), "left": brain & (x <= midline)}


def lesion_side(lesion: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> str | None:
    """``left`` or ``right``: the hemisphere holding most of ``lesion`` (RAS world x),
    None for an empty lesion or one split evenly (within 20 % of its voxels)."""
    lesion = as_mask(lesion) & as_mask(brain)
    n = int(lesion.sum())
    if n == 0:
        return None
    halves = hemispheres(brain, affine)
    right = int((lesion & halves["right"]).sum())
    left = n - right
    if abs(right - left) < 0.2 * n:
        return None
    return "right" if right > left else "left"


def _erode_in_plane(mask: np.ndarray, voxels: int) -> np.ndarray:
    from scipy import ndimage

    if voxels <= 0:
        return mask
    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_erosion(mask, structure=structure, iterations=int(voxels))


def _dilate_mm(mask: np.ndarray, margin_mm: float, spacing_mm: Sequence[float]) -> np.ndarray:
    """Voxels within ``margin_mm`` of ``mask`` (Euclidean, anisotropic voxels)."""
    from scipy import ndimage

    if not mask.any() or margin_mm <= 0:
        return mask
    distance = ndimage.distance_transform_edt(~mask, sampling=[float(s) for s in spacing_mm])
    return distance <= margin_mm


def reference_region(
    tissue: np.ndarray,
    affine: np.ndarray,
    *,
    white_matter: np.ndarray | None = None,
    user_mask: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    side: str | None = None,
    erosion_voxels: int = 1,
    margin_mm: float = 10.0,
    min_ml: float = 0.0,
) -> np.ndarray:
    """The reference region (module docstring) on ``tissue``'s grid (bool).

    ``user_mask`` wins (only restricted to ``tissue``); else ``white_matter`` eroded
    in-plane by ``erosion_voxels``, inside ``tissue``, at least ``margin_mm`` from
    ``exclude`` (the lesion), in the hemisphere opposite ``side`` (``left``/``right``).
    When the region would hold less than ``min_ml`` (or nothing), the constraints are
    relaxed in turn until it does: the erosion, then the margin (the lesion itself stays
    out), then the hemisphere.
    """
    from bolus.io.nifti import voxel_size_mm

    tissue = as_mask(tissue)
    if user_mask is not None:
        return as_mask(user_mask) & tissue
    if white_matter is None:
        raise ValueError("no white matter and no user mask: no reference region")
    wm = as_mask(white_matter) & tissue
    spacing = voxel_size_mm(affine)
    lesion = as_mask(exclude) if exclude is not None else np.zeros(tissue.shape, bool)
    other = {"left": "right", "right": "left"}.get(side or "")
    half = hemispheres(tissue, affine)[other] if other else None
    eroded = _erode_in_plane(wm, erosion_voxels) & tissue
    region = wm
    for erode, margin, contralateral in (
        (True, True, True), (False, True, True), (False, False, True), (False, False, False),
    ):  # fmt: skip
        region = eroded if erode else wm
        region = region & ~(_dilate_mm(lesion, margin_mm, spacing) if margin else lesion)
        if contralateral and half is not None:
            region = region & half
        if region.any() and volume_ml(region, spacing) >= min_ml:
            break
    return region


def relative_map(values: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``values`` / their mean over the finite voxels of ``region`` (NaN when the region
    has no finite positive mean)."""
    values = np.asarray(values, dtype=np.float64)
    inside = as_mask(region) & np.isfinite(values)
    mean = float(values[inside].mean()) if inside.any() else float("nan")
    if not np.isfinite(mean) or mean <= 0:
        return np.full(values.shape, np.nan)
    return values / mean


def _mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    if mask is None:
        return float("nan")
    picked = np.asarray(values, dtype=np.float64)[as_mask(mask)]
    picked = picked[np.isfinite(picked)]
    return float(picked.mean()) if picked.size else float("nan")


# ----------------------------------------------------------------------------- readouts


def large_components(mask: np.ndarray, spacing_mm: Sequence[float], min_ml: float) -> np.ndarray:
    """The connected components (26-neighbourhood) of ``mask`` of at least ``min_ml``
    (``mask`` itself when ``min_ml`` ≤ 0)."""
    from scipy import ndimage

    mask = as_mask(mask)
    if min_ml <= 0 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:] * np.prod([float(s) for s in spacing_mm]) / 1000.0
    return np.isin(labels, np.flatnonzero(sizes >= min_ml) + 1)


def hypoperfusion(
    tmax: np.ndarray,
    tissue: np.ndarray,
    threshold_s: float,
    spacing_mm: Sequence[float] | None = None,
    min_cluster_ml: float = 0.0,
) -> np.ndarray:
    """Tmax > ``threshold_s`` inside ``tissue`` (non-finite Tmax never counts), without its
    connected components smaller than ``min_cluster_ml`` (needs ``spacing_mm``)."""
    tmax = np.asarray(tmax, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mask = as_mask(tissue) & np.isfinite(tmax) & (tmax > float(threshold_s))
    if spacing_mm is None or min_cluster_ml <= 0:
        return mask
    return large_components(mask, spacing_mm, min_cluster_ml)


def core_mask(
    cbf: np.ndarray,
    tmax: np.ndarray,
    tissue: np.ndarray,
    spacing_mm: Sequence[float] | None = None,
    *,
    unaffected: np.ndarray | None = None,
    clinical: Mapping | None = None,
) -> tuple[np.ndarray, float]:
    """(ischaemic core, the CBF it is relative to): CBF < ``core_rcbf_threshold`` × the
    mean CBF of ``unaffected`` ∩ ``tissue`` (all of ``tissue`` when None), inside the
    hypoperfusion Tmax > ``core_tmax_s`` (cleaned of components below ``min_cluster_ml``;
    anywhere in ``tissue`` when ``core_tmax_s`` is null). The core is empty and the CBF NaN
    when the unaffected tissue has no finite CBF."""
    s = section("clinical", clinical)
    tissue = as_mask(tissue)
    cbf = np.asarray(cbf, dtype=np.float64)
    normal = _mean(cbf, tissue if unaffected is None else as_mask(unaffected) & tissue)
    if not np.isfinite(normal):
        return np.zeros(tissue.shape, bool), normal
    with np.errstate(invalid="ignore"):
        core = tissue & np.isfinite(cbf) & (cbf < float(s["core_rcbf_threshold"]) * normal)
    if s.get("core_tmax_s") is not None:
        core &= hypoperfusion(tmax, tissue, s["core_tmax_s"], spacing_mm,
                              float(s["min_cluster_ml"]))  # fmt: skip
    return core, normal


def stroke_readouts(
    cbf: np.ndarray,
    tmax: np.ndarray,
    tissue: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    unaffected: np.ndarray | None = None,
    clinical: Mapping | None = None,
) -> dict[str, float]:
    """Core, Tmax volumes, mismatch, HIR and the target-mismatch decision (module
    docstring) of one method's CBF (ml/100 g/min) and Tmax (s) over ``tissue``.

    ``unaffected``: the tissue whose mean CBF is the core's 100 % (the hemisphere opposite
    the lesion); None: all of ``tissue``. Non-finite voxels are never counted."""
    s = section("clinical", clinical)
    out: dict[str, float] = {}
    for threshold in tmax_thresholds(clinical):
        mask = hypoperfusion(tmax, tissue, threshold, spacing_mm, float(s["min_cluster_ml"]))
        out[tmax_column(threshold)] = volume_ml(mask, spacing_mm)
    core, normal = core_mask(cbf, tmax, tissue, spacing_mm, unaffected=unaffected,
                             clinical=clinical)  # fmt: skip
    out["unaffected_cbf"] = normal
    core_ml = volume_ml(core, spacing_mm) if np.isfinite(normal) else float("nan")
    out["core_ml"] = core_ml
    hypo = out[tmax_column(s["mismatch_tmax_s"])]
    out["mismatch_ml"] = hypo - core_ml
    if core_ml > 0:
        out["mismatch_ratio"] = hypo / core_ml
    elif hypo > 0:
        out["mismatch_ratio"] = float("inf")
    else:
        out["mismatch_ratio"] = float("nan")
    out["hir"] = out[tmax_column(s["hir_tmax_s"])] / hypo if hypo > 0 else float("nan")
    decided = target_mismatch(core_ml, out["mismatch_ratio"], out["mismatch_ml"], clinical)
    out["target_mismatch"] = float(decided) if np.isfinite(core_ml) else float("nan")
    return out


def target_mismatch(core_ml, ratio, mismatch_ml, clinical: Mapping | None = None):
    """Whether (core, ratio, mismatch) meet the target-mismatch profile (config
    ``clinical.target_mismatch``; DEFUSE 3 defaults). Vectorised over arrays; NaN reads
    as not met."""
    t = section("clinical", clinical)["target_mismatch"]
    with np.errstate(invalid="ignore"):
        met = (
            (np.asarray(core_ml, float) < float(t["core_max_ml"]))
            & (np.asarray(ratio, float) >= float(t["ratio_min"]))
            & (np.asarray(mismatch_ml, float) >= float(t["mismatch_min_ml"]))
        )
    return bool(met) if np.ndim(met) == 0 else met


def tumour_readouts(rcbv: np.ndarray, lesion: np.ndarray | None) -> dict[str, float]:
    """Mean, median and 90th percentile of rCBV over the finite voxels of ``lesion``
    (NaN without a lesion or a finite voxel)."""
    keys = ("lesion_rcbv_mean", "lesion_rcbv_median", "lesion_rcbv_p90")
    if lesion is None:
        return dict.fromkeys(keys, float("nan"))
    values = np.asarray(rcbv, dtype=np.float64)[as_mask(lesion)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return dict.fromkeys(keys, float("nan"))
    mean, median, p90 = values.mean(), np.median(values), np.percentile(values, 90)
    return dict(zip(keys, map(float, (mean, median, p90)), strict=True))


def method_readouts(
    maps: Mapping[str, np.ndarray],
    region: np.ndarray,
    tissue: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    unaffected: np.ndarray | None = None,
    gm: np.ndarray | None = None,
    wm: np.ndarray | None = None,
    lesion: np.ndarray | None = None,
    clinical: Mapping | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every readout of one method (:func:`readout_columns`; NaN for those its maps cannot
    give) and its relative maps ``{"rcbv": …, "rcbf": …}`` (those it has CBV/CBF for).

    Volumes are read in ``tissue``; ``gm``, ``wm`` (the ``*_rcbv``/``*_rcbf`` means) and
    ``lesion`` (the tumour readouts) as given. Restricting them to a tissue mask that leaves
    out voxels by their CBV (CSF as low CBV, vessels as high) would select on the method's
    own noise: it raised sSVD's white-matter mean, and so lowered its grey-matter rCBV, by
    10 %, and cut the tumour's highest-CBV voxels."""
    columns = readout_columns(clinical)
    out = dict.fromkeys(columns, float("nan"))
    out["reference_region_ml"] = volume_ml(region, spacing_mm)
    relative = {}
    for name in ("cbv", "cbf"):
        if name in maps:
            out[f"reference_{name}"] = _mean(maps[name], region)
            relative[f"r{name}"] = relative_map(maps[name], region)
            for tissue_name, mask in (("wm", wm), ("gm", gm)):
                out[f"{tissue_name}_r{name}"] = _mean(relative[f"r{name}"], mask)
    if "cbf" in maps and "tmax" in maps:
        out.update(stroke_readouts(maps["cbf"], maps["tmax"], tissue, spacing_mm,
                                   unaffected=unaffected, clinical=clinical))  # fmt: skip
    if "rcbv" in relative:
        out.update(tumour_readouts(relative["rcbv"], lesion))
    return {k: float(out[k]) for k in columns}, relative


# ----------------------------------------------------------------------------- agreement


def bland_altman(method: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Bias (mean of method − reference), SD of the differences (ddof 1) and the 95 %
    limits of agreement bias ± 1.96 SD over the pairs where both are finite."""
    a, b = _finite_pairs(method, reference)
    n = a.size
    if n == 0:
        return {"n": 0, "bias": np.nan, "sd_difference": np.nan, "loa_low": np.nan,
                "loa_high": np.nan}  # fmt: skip
    d = a - b
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    return {"n": n, "bias": bias, "sd_difference": sd, "loa_low": bias - 1.96 * sd,
            "loa_high": bias + 1.96 * sd}  # fmt: skip


def _finite_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def icc_2_1(method: np.ndarray, reference: np.ndarray) -> float:
    """ICC(2,1) of two raters (the method and the reference) over subjects: two-way random
    effects, absolute agreement, single measures (Shrout & Fleiss 1979; McGraw & Wong's
    ICC(A,1)): (MSR − MSE) / (MSR + (k − 1)·MSE + k·(MSC − MSE)/n) with k = 2, over the
    pairs where both are finite. NaN below 2 pairs or when every value is equal."""
    a, b = _finite_pairs(method, reference)
    n, k = a.size, 2
    if n < 2:
        return float("nan")
    y = np.stack([a, b], axis=1)
    grand = y.mean()
    ss_rows = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_total = ((y - grand) ** 2).sum()
    ms_rows = ss_rows / (n - 1)
    ms_cols = ss_cols / (k - 1)
    ms_error = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    if denominator <= 0:
        return float("nan")
    return float((ms_rows - ms_error) / denominator)


def decision_agreement(method: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Sensitivity and specificity of a yes/no decision (1/0) against the reference's,
    over the subjects where both are known (NaN without a positive / negative reference)."""
    a, b = _finite_pairs(method, reference)
    a, b = a > 0.5, b > 0.5
    positive, negative = int(b.sum()), int((~b).sum())
    return {
        "sensitivity": float((a & b).sum() / positive) if positive else float("nan"),
        "specificity": float((~a & ~b).sum() / negative) if negative else float("nan"),
        "n_positive": positive,
        "n_negative": negative,
    }


def agreement_table(clinical_rows, reference: str = REFERENCE_METHOD, readouts=None):
    """Agreement of every method's readouts with ``reference``'s across subjects
    (columns :data:`AGREEMENT_COLUMNS`; a row per method × readout both have, ordered as
    ``readouts``). ``clinical_rows``: clinical.tsv as a frame. Empty when no row is the
    reference's."""
    import pandas as pd

    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in AGREEMENT_COLUMNS})
    if clinical_rows.empty or reference not in set(clinical_rows["method"].astype(str)):
        return empty
    table = clinical_rows.assign(method=clinical_rows["method"].astype(str))
    readouts = [r for r in (readouts or AGREEMENT_READOUTS) if r in table.columns]
    ref = table[table["method"] == reference].set_index("participant_id")
    records = []
    for method in dict.fromkeys(table["method"]):
        if method == reference:
            continue
        rows = table[table["method"] == method].set_index("participant_id")
        shared = rows.index.intersection(ref.index)
        for readout in [*readouts, "target_mismatch"]:
            if readout not in table.columns:
                continue
            a = rows.loc[shared, readout].to_numpy(np.float64)
            b = ref.loc[shared, readout].to_numpy(np.float64)
            pa, pb = _finite_pairs(a, b)
            record = {"method": method, "reference": reference, "readout": readout,
                      "mean_method": float(pa.mean()) if pa.size else np.nan,
                      "mean_reference": float(pb.mean()) if pb.size else np.nan}  # fmt: skip
            if readout == "target_mismatch":  # a yes/no decision: the share of yes, and
                # sensitivity and specificity against the reference's (no Bland–Altman, no ICC)
                record.update(n=int(pa.size), **decision_agreement(a, b))
            else:
                record.update(bland_altman(a, b))
                record["icc_2_1"] = icc_2_1(a, b)
            records.append(record)
    if not records:
        return empty
    return pd.DataFrame.from_records(records).reindex(columns=list(AGREEMENT_COLUMNS))
