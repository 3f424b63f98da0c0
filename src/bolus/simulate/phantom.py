"""Digital DSC-MRI head phantom: anatomy, perfusion parameters, truth maps and signal.

Anatomy comes from nilearn's shipped MNI152 templates (grey matter, white matter and brain
mask, 2 mm; no network), placed in the scanner with a per-subject similarity transform
(rotation ±5° about each axis, translation ±5 mm, scaling ±5 % per axis) and sampled on an
axial DSC grid (default 64 × 64 × 12: 220 mm in-plane field of view → 3.44 mm pixels,
12 slices of 5 mm every 6 mm covering MNI z ≈ −6 … +72 mm, the supratentorial brain).
The scanner's world frame is MNI-like: for an untransformed subject, world = MNI (RAS, mm).

Grid and affine
    Array axes are (i, j, k) = (DICOM column, DICOM row, slice): i runs to the patient's
    left, j posterior, k superior (axial, LPS DICOM convention; ImageOrientationPatient
    = [1, 0, 0, 0, 1, 0], slice 0 lowest). :attr:`AcquisitionGrid.affine_ras` is the RAS
    world affine (nibabel/dcm2niix convention) that DICOM defines for this grid (LPS → RAS
    flips x and y). Truth maps carry it, so resampling them into any conversion of the DICOM
    series by world coordinates lines up voxel for voxel.

Labels (``labels.nii.gz``; :data:`LABELS`)
    0 background, 1 scalp, 2 skull, 3 CSF (ventricles, sulci and a thin extra-axial layer),
    4 GM, 5 WM, 6 artery (MCA M1 and insular/opercular branches, ACA/pericallosal: one voxel
    wide, pure arterial blood, the global AIF exactly; the insular branches on the side of a
    stroke are omitted, occluded), 7 vein (superior sagittal sinus, midline, 2–3 voxels wide),
    8 stroke core, 9 stroke penumbra, 10 tumour.

Perfusion parameters (ml/100 g/min, ml/100 g, s), drawn per subject and per voxel from
smooth random fields (ranges are hard bounds; healthy values also carry a per-subject factor):

    ==========  ==========  ===========  ==========  =============  ===================
    tissue      CBF         CBV          delay δ     dispersion β   residue shape k
    ==========  ==========  ===========  ==========  =============  ===================
    GM          ~60 ± 10 %  ~4 ± 10 %    0 – 1.0     0 – 1.5        1 – 3 (all tissue)
    WM          ~22 ± 10 %  ~2 ± 10 %    0 – 1.0     0 – 1.5
    core        8 – 12      1.3 – 1.7    6 – 10      2 – 4
    penumbra    20 – 25     3.5 – 4.0    4.5 – 8     2 – 4
    tumour      90 – 120    8 – 10       0 – 1.0     0 – 1.5
    ==========  ==========  ===========  ==========  =============  ===================

    Healthy delays and dispersions are those of normal tissue fed by a nearby artery, so its
    true Tmax stays in the normal 0–4 s range (Tmax > 2 s already counts as delayed clinically).
    MTT = 60·CBV/CBF. k is the gamma-family residue shape of
    :func:`bolus.simulate.kinetics.residue_function` (1 exponential … large box-car).
    Delays are rounded to the 0.1 s simulation grid. The scalp is perfused (one curve,
    CBF 10, CBV 1.5) but, like CSF, skull and vessels, is 0 in every truth map.

Truth maps (:func:`simulate_dsc` → ``DSCSimulation.truth``), in the DSC grid, 0 outside
``brain`` (= GM, WM, core, penumbra, tumour; CSF and vessels excluded):
CBF, CBV, MTT, Tmax = δ + argmax (h_β ⊗ R) (what deconvolution with the global AIF
measures, :func:`~bolus.simulate.kinetics.effective_residue_peak_time`), TTP = time from the
first volume to the peak of the noise-free tissue concentration on the 0.1 s grid,
lesion = brain & Tmax > 6 s (empty for healthy and tumour subjects).

Signal
    Concentrations are simulated on a 0.1 s grid and sampled at t_k = k·TR (all slices of a
    volume share its time). Blood: ΔR2* = r·C; tissue: ΔR2* = relaxivity_ratio·r·C, with
    r = :data:`BLOOD_RELAXIVITY` and the AIF scaled so that its peak ΔR2* is 70–90 s⁻¹
    (arterial signal drop ≈ 88–93 % at TE 30 ms, grey matter ≈ 11 %: with equal relaxivity a
    smaller arterial peak leaves the tissue curves in the noise at realistic SNR). ``relaxivity_ratio`` defaults to 1:
    DSC quantification assumes tissue and blood relax alike, and the pipeline's comparison
    with the truth maps holds only then. S = S0·B·exp(−TE·ΔR2*), S0 per tissue (T2*-weighted
    EPI: CSF 2400 > GM 1500 > artery 1300 > WM 1150 > scalp 1000 > vein 900 > skull 80 >
    background 0, partial-volume mixed for CSF/GM/WM), B a smooth coil-sensitivity field
    (≈ 0.8 – 1.2). Rician noise: magnitude of complex Gaussian noise with
    σ = S0_GM/snr, i.e. ``snr`` is the baseline SNR of grey matter (before the bias field).
    The vein (VOF) is the AIF delayed 5–7 s, dispersed (β 2.5–3.5 s) and scaled so its area
    is :data:`VOF_AREA_RATIO` times the AIF's, as measured venous curves usually are.
    With ``motion_mm`` > 0 the noise-free series is moved rigidly per volume along a smooth
    random drift (translations up to ``motion_mm``, rotations up to ``motion_mm`` at 80 mm
    from the centre) about the head's **mean position over the pre-bolus volumes** (those
    acquired before the arterial arrival): the truth maps are in that position, the one
    motion correction aligns to (:mod:`bolus.preprocess.motion`: every volume to the mean of
    the pre-bolus volumes), so corrected maps and truth share one grid. (Truth in volume 0's
    position would sit ≈ 1 mm away from the corrected series for a 2 mm drift, which alone
    cost 0.15 in r of CBF on a 48×48×8 grid.)

Options, all off by default (the default cohort does not change with them):

Contrast leakage (``tumour_leakage_per_s`` = k2 > 0, tumour subjects)
    Where the blood–brain barrier is broken, tracer leaks into the extravascular space:
    C_e(t) = K^trans·∫₀ᵗ C_p(τ)dτ (no backflux within the minute and a half of a DSC
    acquisition, the Boxerman–Weisskoff assumption, AJNR 2006). Its T1 shortening raises the
    signal by a factor 1 + ε(t) with ε ∝ ΔR1 ∝ C_e; in ΔR2* = −ln(S/S0)/TE that is an additive
    −ε/TE, so the apparent tumour ΔR2* is  ΔR2*_vascular(t) − k2·∫₀ᵗ ΔR2*_blood,local(τ)dτ,
    with k2 (1/s) lumping K^trans, r1, TR and TE, and ΔR2*_blood,local the voxel's delayed,
    dispersed AIF. k2 < 0 models a T2*-dominated leak (signal lowered instead). Within the
    tumour k2 scales with the local CBF, from 0.5·k2 at its lowest to k2 at its highest
    (leakier where more vascular), deterministically, so no random number is drawn. The truth
    CBV stays the vascular one, which is what leakage correction should recover;
    ``delta_r2s`` holds the apparent ΔR2* and ``leakage_delta_r2s`` the leakage term.

Partial-volume arteries (``artery_blood_fraction`` = (low, high))
    Each artery voxel holds a fraction f ~ U(low, high) of arterial blood, the rest grey
    matter (S0 of GM, the mean GM concentration curve). Signals add, not ΔR2*s:
    S = f·S0_a·exp(−TE·ΔR2*_a) + (1 − f)·S0_GM·exp(−TE·ΔR2*_GM), so the measured arterial
    curve is truncated at its peak and carries a tissue tail (the partial-volume distortion
    of real arterial voxels). ``artery_fraction`` holds f (1 in the other artery voxels).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.special import erf

from bolus.simulate.kinetics import (
    arterial_input,
    effective_residue_peak_time,
    local_aif,
    tissue_concentration,
)

LABELS = {
    0: "background",
    1: "scalp",
    2: "skull",
    3: "csf",
    4: "gm",
    5: "wm",
    6: "artery",
    7: "vein",
    8: "core",
    9: "penumbra",
    10: "tumour",
}
BACKGROUND, SCALP, SKULL, CSF, GM, WM, ARTERY, VEIN, CORE, PENUMBRA, TUMOUR = range(11)
#: labels of perfused brain tissue: the truth maps' support (``brain.nii.gz``)
BRAIN_TISSUE = (GM, WM, CORE, PENUMBRA, TUMOUR)
PATHOLOGIES = ("healthy", "stroke", "tumour")

FINE_DT_S = 0.1  # simulation grid (s)
BLOOD_RELAXIVITY = 10.0  # r: ΔR2* per concentration (1/s per mM)
AIF_PEAK_DELTA_R2S = (70.0, 90.0)  # range of the arterial peak ΔR2* (1/s)
AIF_ARRIVAL_S = (12.0, 16.0)  # range of the bolus's arterial arrival after the first frame (s)
VOF_AREA_RATIO = 1.15  # area of the venous curve / area of the AIF
LESION_TMAX_S = 6.0
S0 = {BACKGROUND: 0.0, SCALP: 1000.0, SKULL: 80.0, CSF: 2400.0, GM: 1500.0, WM: 1150.0,
      ARTERY: 1300.0, VEIN: 900.0}  # fmt: skip
MNI_CENTRE = np.array([0.0, -18.0, 33.0])  # rotation centre and field-of-view centre (mm)


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class AcquisitionGrid:
    """An axial DSC grid in DICOM terms.

    ``shape`` = (columns, rows, slices), the array axes (i, j, k) of every volume here;
    ``first_position_lps`` is ImagePositionPatient of slice 0 (centre of its first pixel).
    """

    shape: tuple[int, int, int]
    pixel_spacing_mm: float
    slice_spacing_mm: float
    slice_thickness_mm: float
    first_position_lps: tuple[float, float, float]

    @classmethod
    def axial(cls, matrix=(64, 64, 12), fov_mm=220.0, coverage_mm=72.0, centre_ras=MNI_CENTRE):
        """``matrix`` (columns, rows, slices) over a square ``fov_mm`` in-plane field of view;
        slices every ``coverage_mm``/n (5/6 of that thick) centred on ``centre_ras``."""
        nx, ny, nz = (int(n) for n in matrix)
        dx = float(fov_mm) / nx
        dz = float(coverage_mm) / nz
        centre_lps = np.array([-centre_ras[0], -centre_ras[1], centre_ras[2]], dtype=float)
        first = centre_lps - np.array([(nx - 1) * dx, (ny - 1) * dx, (nz - 1) * dz]) / 2
        return cls((nx, ny, nz), dx, dz, round(dz * 5 / 6, 3), tuple(float(v) for v in first))

    @property
    def affine_lps(self) -> np.ndarray:
        """Voxel (i, j, k) → DICOM patient coordinates (LPS, mm)."""
        d, dz = self.pixel_spacing_mm, self.slice_spacing_mm
        out = np.diag([d, d, dz, 1.0])
        out[:3, 3] = self.first_position_lps
        return out

    @property
    def affine_ras(self) -> np.ndarray:
        """Voxel (i, j, k) → world RAS (mm): the affine of every truth NIfTI."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps

    def slice_position_lps(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice ``k``."""
        return self.affine_lps[:3, :3] @ np.array([0.0, 0.0, k]) + self.affine_lps[:3, 3]

    def voxel_centres_ras(self, slice_offset: float = 0.0) -> np.ndarray:
        """World RAS coordinates (mm) of every voxel centre, (i, j, k, 3); ``slice_offset``
        (in slices) shifts the points through the slice."""
        idx = np.stack(
            np.meshgrid(*[np.arange(n, dtype=float) for n in self.shape], indexing="ij"), -1
        )
        idx[..., 2] += slice_offset
        a = self.affine_ras
        return idx @ a[:3, :3].T + a[:3, 3]


def _rotation(angles_rad) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:3, :3].T + affine[:3, 3]


# ----------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class _Templates:
    fields: np.ndarray  # (4, X, Y, Z): brain, gm, wm, distance outside the brain (mm)
    world_to_index: np.ndarray  # MNI mm → template voxel
    sinus_points: np.ndarray  # (n, 3) MNI mm of the superior sagittal sinus


@functools.cache
def _templates() -> _Templates:
    """nilearn's MNI152 2 mm templates (shipped with nilearn), loaded once per process."""
    from nilearn import datasets

    brain_img = datasets.load_mni152_brain_mask(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata(dtype=np.float32)
    brain = (brain_img.get_fdata() > 0.5).astype(np.float32)
    affine = brain_img.affine
    spacing = np.abs(np.diag(affine)[:3])
    outside = ndimage.distance_transform_edt(brain == 0, sampling=spacing).astype(np.float32)
    # superior sagittal sinus: midline band 2–6 mm outside the brain, from the frontal
    # vertex over the top to the occipital pole
    idx = np.argwhere((outside > 1.5) & (outside <= 6.0))
    mni = _apply(affine, idx.astype(float))
    angle = np.degrees(np.arctan2(mni[:, 2] - 15.0, mni[:, 1] + 18.0))  # 90°: up, 180°: back
    angle = np.where(angle < -90, angle + 360, angle)
    sinus = mni[(np.abs(mni[:, 0]) <= 4.0) & (angle > 45.0) & (angle < 200.0)]
    return _Templates(np.stack([brain, gm, wm, outside]), np.linalg.inv(affine), sinus)


def _sample_templates(mni_points: np.ndarray) -> np.ndarray:
    """Trilinear template values at MNI points (..., 3) → (4, ...): brain, gm, wm, distance."""
    tpl = _templates()
    idx = _apply(tpl.world_to_index, mni_points.reshape(-1, 3)).T
    out = np.stack(
        [
            ndimage.map_coordinates(f, idx, order=1, mode="constant", cval=c)
            for f, c in zip(tpl.fields, (0.0, 0.0, 0.0, 1e3), strict=True)
        ]
    )
    return out.reshape((4,) + mni_points.shape[:-1])


def _polyline(points, step_mm=0.5) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    out = []
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        n = max(int(np.ceil(np.linalg.norm(b - a) / step_mm)), 1)
        out.append(a + (b - a) * np.linspace(0, 1, n, endpoint=False)[:, None])
    out.append(pts[-1:])
    return np.concatenate(out)


def _artery_points(omit_side: int = 0) -> np.ndarray:
    """MNI points (mm) along the arteries drawn: MCA M1 and insular/opercular branches of
    both sides (those of side ``omit_side`` (+1 right, −1 left) left out), ACA/pericallosal."""
    lines = [
        [(0, 12, 0), (0, 28, 8), (0, 33, 19), (0, 25, 30), (0, 5, 34), (0, -20, 33), (0, -40, 28)]
    ]
    for side in (-1, 1):
        lines.append([(side * 10, 4, 1), (side * 38, 2, 3)])  # M1 / sylvian segment
        if side != omit_side:
            lines.append(
                [(side * 38, 2, 3), (side * 40, -8, 12), (side * 42, -18, 22), (side * 50, -24, 31)]
            )
    return np.concatenate([_polyline(line) for line in lines])


# ----------------------------------------------------------------------------- phantom
@dataclass
class Phantom:
    """One simulated head in one DSC grid. Parameter maps are 0 outside perfused tissue
    (scalp perfusion is held apart, see :data:`SCALP_PERFUSION`)."""

    grid: AcquisitionGrid
    pathology: str
    labels: np.ndarray  # uint8, LABELS
    s0: np.ndarray  # tissue baseline signal, a.u. (no bias field)
    bias: np.ndarray  # coil sensitivity field
    cbf: np.ndarray  # ml/100 g/min
    cbv: np.ndarray  # ml/100 g
    delay_s: np.ndarray
    dispersion_s: np.ndarray
    residue_shape: np.ndarray
    mni_to_world: np.ndarray  # 4×4, this subject's placement in the scanner
    info: dict = field(default_factory=dict)

    @property
    def brain(self) -> np.ndarray:
        return np.isin(self.labels, BRAIN_TISSUE)

    @property
    def mtt_s(self) -> np.ndarray:
        return np.where(self.cbf > 0, 60.0 * self.cbv / np.where(self.cbf > 0, self.cbf, 1.0), 0.0)

    @property
    def baseline(self) -> np.ndarray:
        """Noise-free pre-bolus signal S0·B."""
        return self.s0 * self.bias


SCALP_PERFUSION = {"cbf": 10.0, "cbv": 1.5, "delay_s": 1.0, "dispersion_s": 1.0, "shape": 1.0}


def _smooth_uniform(rng, shape, sigma_vox) -> np.ndarray:
    """A smooth random field with (close to) uniform marginal on [0, 1]."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="reflect")
    f = (f - f.mean()) / max(f.std(), 1e-12)
    return 0.5 * (1.0 + erf(f / np.sqrt(2.0)))


def _mark_points(labels, grid: AcquisitionGrid, world_points, value) -> None:
    """Set ``labels`` to ``value`` in every voxel holding one of the world (RAS) points."""
    idx = np.rint(_apply(np.linalg.inv(grid.affine_ras), world_points)).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(grid.shape)), axis=1)
    i, j, k = idx[inside].T
    labels[i, j, k] = value


def make_phantom(
    rng: np.random.Generator, grid: AcquisitionGrid, pathology: str = "healthy"
) -> Phantom:
    """Draw one subject: anatomy placed in ``grid``, labels, perfusion parameters, S0, bias."""
    if pathology not in PATHOLOGIES:
        raise ValueError(f"unknown pathology {pathology!r}; expected one of {PATHOLOGIES}")
    angles = np.radians(rng.uniform(-5, 5, 3))
    scale = rng.uniform(0.95, 1.05, 3)
    shift = rng.uniform(-5, 5, 3)
    linear = _rotation(angles) @ np.diag(scale)
    mni_to_world = np.eye(4)
    mni_to_world[:3, :3] = linear
    mni_to_world[:3, 3] = MNI_CENTRE + shift - linear @ MNI_CENTRE
    world_to_mni = np.linalg.inv(mni_to_world)

    # template fractions averaged over the slice thickness (partial volume through-plane)
    half = grid.slice_thickness_mm / grid.slice_spacing_mm / 3
    sampled = np.mean(
        [
            _sample_templates(_apply(world_to_mni, grid.voxel_centres_ras(o)))
            for o in (-half, 0, half)
        ],
        axis=0,
    )
    brain_p, gm_p, wm_p, outside_mm = sampled
    csf_p = np.clip(brain_p - gm_p - wm_p, 0.0, 1.0)
    mni = _apply(world_to_mni, grid.voxel_centres_ras())

    labels = np.zeros(grid.shape, np.uint8)
    skull_mm, scalp_mm = rng.uniform(5.0, 7.0), rng.uniform(4.0, 6.0)
    labels[outside_mm <= 3.0 + skull_mm + scalp_mm] = SCALP
    labels[outside_mm <= 3.0 + skull_mm] = SKULL
    labels[outside_mm <= 3.0] = CSF
    inside = brain_p >= 0.5
    tissue = np.array([CSF, GM, WM], np.uint8)[np.argmax(np.stack([csf_p, gm_p, wm_p]), axis=0)]
    labels[inside] = tissue[inside]
    parenchyma = np.isin(labels, (GM, WM))

    info: dict = {"pathology": pathology}
    sigma = (10.0 / grid.pixel_spacing_mm,) * 2 + (10.0 / grid.slice_spacing_mm,)
    fields = {name: _smooth_uniform(rng, grid.shape, sigma) for name in
              ("cbf", "cbv", "delay", "dispersion", "shape", "edge")}  # fmt: skip

    def ellipsoid(centre, radii):  # ≤ 1 inside, with an irregular smooth edge
        e = np.sum(((mni - np.asarray(centre)) / np.asarray(radii)) ** 2, axis=-1)
        return e <= 1.0 + 0.5 * (fields["edge"] - 0.5)

    side = int(rng.choice([-1, 1]))  # −1 left, +1 right (RAS x)
    if pathology == "stroke":
        pen = ellipsoid((side * 42, -15, 20), (20, 40, 28)) & parenchyma
        core = ellipsoid((side * 40, -10, 16), (11, 16, 13)) & parenchyma
        labels[pen] = PENUMBRA
        labels[core] = CORE
        info["stroke_side"] = "right" if side > 0 else "left"
    elif pathology == "tumour":
        centre = (side * rng.uniform(20, 35), rng.uniform(-45, 20), rng.uniform(12, 45))
        radius = rng.uniform(10, 15)
        blob = ellipsoid(centre, (radius,) * 3) & inside
        labels[blob] = TUMOUR
        info["tumour_centre_mni"] = [round(float(c), 1) for c in centre]
        info["tumour_radius_mm"] = round(float(radius), 1)

    tpl = _templates()
    _mark_points(labels, grid, _apply(mni_to_world, tpl.sinus_points), VEIN)
    arteries = _artery_points(omit_side=side if pathology == "stroke" else 0)
    _mark_points(labels, grid, _apply(mni_to_world, arteries), ARTERY)

    # perfusion parameters
    cbf = np.zeros(grid.shape)
    cbv = np.zeros(grid.shape)
    delay = np.zeros(grid.shape)
    disp = np.zeros(grid.shape)
    gm_cbf, wm_cbf = 60.0 * rng.uniform(0.85, 1.15), 22.0 * rng.uniform(0.85, 1.15)
    gm_cbv, wm_cbv = 4.0 * rng.uniform(0.9, 1.1), 2.0 * rng.uniform(0.9, 1.1)
    info.update(
        gm_cbf=round(gm_cbf, 2),
        wm_cbf=round(wm_cbf, 2),
        gm_cbv=round(gm_cbv, 3),
        wm_cbv=round(wm_cbv, 3),
    )
    u = fields
    table = {  # label: (cbf, cbv, delay, dispersion) as (low, high) over the field's [0, 1]
        GM: ((0.9 * gm_cbf, 1.1 * gm_cbf), (0.9 * gm_cbv, 1.1 * gm_cbv), (0, 1.0), (0, 1.5)),
        WM: ((0.9 * wm_cbf, 1.1 * wm_cbf), (0.9 * wm_cbv, 1.1 * wm_cbv), (0, 1.0), (0, 1.5)),
        CORE: ((8, 12), (1.3, 1.7), (6, 10), (2, 4)),
        PENUMBRA: ((20, 25), (3.5, 4.0), (4.5, 8), (2, 4)),
        TUMOUR: ((90, 120), (8, 10), (0, 1.0), (0, 1.5)),
    }
    for label, ranges in table.items():
        m = labels == label
        for out, key, (lo, hi) in zip(
            (cbf, cbv, delay, disp), ("cbf", "cbv", "delay", "dispersion"), ranges, strict=True
        ):
            out[m] = lo + (hi - lo) * u[key][m]
    delay = np.round(delay / FINE_DT_S) * FINE_DT_S
    residue_k = np.where(np.isin(labels, BRAIN_TISSUE), 1.0 + 2.0 * fields["shape"], 0.0)

    # baseline signal: partial-volume CSF/GM/WM mix in the brain, label values elsewhere
    s0 = np.zeros(grid.shape)
    for label, value in S0.items():
        s0[labels == label] = value
    brain_like = np.isin(labels, (CSF, GM, WM, PENUMBRA)) & inside
    total = csf_p + gm_p + wm_p
    mix = (csf_p * S0[CSF] + gm_p * S0[GM] + wm_p * S0[WM]) / np.where(total > 0, total, 1.0)
    s0[brain_like] = mix[brain_like]
    s0[labels == CORE] = 1.1 * mix[labels == CORE]  # vasogenic oedema: slightly brighter
    s0[labels == TUMOUR] = 1700.0

    # coil sensitivity: smooth low-order field, ≈ 0.8–1.2 over the head
    coords = [np.linspace(-1, 1, n) for n in grid.shape]
    x, y, z = np.meshgrid(*coords, indexing="ij")
    terms = np.stack([x, y, 0.5 * z, x * x - 0.33, y * y - 0.33, x * y])
    bias = np.clip(1.0 + np.tensordot(rng.normal(0, 0.06, terms.shape[0]), terms, 1), 0.75, 1.25)

    return Phantom(
        grid, pathology, labels, s0, bias, cbf, cbv, delay, disp, residue_k, mni_to_world, info
    )


def anatomical_image(phantom: Phantom, points_ras: np.ndarray) -> np.ndarray:
    """A T1-weighted-looking image of this subject's head at world points (..., 3): for the
    localizer series (WM > GM > CSF, bright scalp, dark skull), a.u. up to ≈ 1000."""
    mni = _apply(np.linalg.inv(phantom.mni_to_world), points_ras)
    brain, gm, wm, outside = _sample_templates(mni)
    csf = np.clip(brain - gm - wm, 0, 1)
    image = 1000 * wm + 650 * gm + 250 * csf
    image = np.where(brain < 0.5, np.where(outside <= 3, 250.0, 0.0), image)
    image = np.where((outside > 9.0) & (outside <= 15.0), 850.0, image)
    return image


# ----------------------------------------------------------------------------- signal
@dataclass
class DSCSimulation:
    """A simulated DSC acquisition and its truth. 4D arrays are (i, j, k, time)."""

    phantom: Phantom
    time_s: np.ndarray  # acquisition times t_k = k·TR
    te_s: float
    tr_s: float
    aif_mM: np.ndarray  # global AIF at time_s (the artery voxels' concentration)
    vof_mM: np.ndarray
    concentration_mM: np.ndarray  # noise-free, no motion, float32
    delta_r2s: np.ndarray  # noise-free ΔR2* (1/s), no motion, float32
    signal: np.ndarray  # what the scanner stores: noisy, moved, float32
    motion: np.ndarray  # (time, 6): trans x, y, z (mm, RAS), rot x, y, z (rad), vs the
    # mean pre-bolus position (that of the truth maps)
    truth: dict[str, np.ndarray]
    noise_sigma: float
    parameters: dict = field(default_factory=dict)
    leakage_delta_r2s: np.ndarray | None = None  # apparent ΔR2* of contrast leakage (1/s)
    artery_fraction: np.ndarray | None = None  # arterial blood fraction of the artery voxels

    @property
    def aif_delta_r2s(self) -> np.ndarray:
        return BLOOD_RELAXIVITY * self.aif_mM

    @property
    def signal_noise_free(self) -> np.ndarray:
        """Noise-free signal without motion, S0·B·exp(−TE·ΔR2*)."""
        return self.phantom.baseline[..., None] * np.exp(-self.te_s * self.delta_r2s)


def _sampler(time_s, n_fine):
    pos = np.asarray(time_s) / FINE_DT_S
    i0 = np.clip(np.floor(pos + 1e-9).astype(int), 0, n_fine - 2)
    w = np.clip(pos - i0, 0.0, 1.0)
    return lambda c: c[..., i0] * (1 - w) + c[..., i0 + 1] * w


def _motion_trajectory(rng, n_t, motion_mm, n_reference: int = 1) -> np.ndarray:
    """(n_t, 6) smooth random drift whose mean over the first ``n_reference`` volumes (the
    pre-bolus ones) is 0: the truth maps are in that mean position."""
    if motion_mm <= 0 or n_t < 2:
        return np.zeros((n_t, 6))
    walk = np.cumsum(rng.standard_normal((n_t, 6)), axis=0)
    walk = ndimage.gaussian_filter1d(walk, sigma=max(n_t / 20, 1.0), axis=0)
    walk -= walk[: min(max(int(n_reference), 1), n_t)].mean(axis=0)
    walk /= np.maximum(np.abs(walk).max(axis=0), 1e-12)
    amplitude = np.array([motion_mm] * 3 + [motion_mm / 80.0] * 3) * rng.uniform(0.4, 1.0, 6)
    return walk * amplitude


def _move(volumes, grid: AcquisitionGrid, motion) -> np.ndarray:
    """Resample every volume of (i, j, k, t) through its rigid transform (about the FOV centre)."""
    a = grid.affine_ras
    a_inv = np.linalg.inv(a)
    centre = _apply(a, (np.array(grid.shape) - 1) / 2.0)
    out = np.empty_like(volumes)
    for t in range(volumes.shape[-1]):
        rigid = np.eye(4)
        rigid[:3, :3] = _rotation(motion[t, 3:])
        rigid[:3, 3] = centre + motion[t, :3] - rigid[:3, :3] @ centre
        m = a_inv @ np.linalg.inv(rigid) @ a  # output voxel → input voxel
        out[..., t] = ndimage.affine_transform(
            volumes[..., t], m[:3, :3], m[:3, 3], order=1, mode="nearest"
        )
    return out


def undo_motion(series: np.ndarray, grid: AcquisitionGrid, motion) -> np.ndarray:
    """Move every volume of a simulated moving series (i, j, k, t) back to the reference
    position with its **true** rigid transform (``DSCSimulation.motion``), trilinearly: the
    best any rigid motion correction with linear interpolation can do (an oracle for tests).
    What was blurred by the simulated partial volume and the second interpolation stays."""
    a = grid.affine_ras
    a_inv = np.linalg.inv(a)
    centre = _apply(a, (np.array(grid.shape) - 1) / 2.0)
    out = np.empty_like(series)
    for t in range(series.shape[-1]):
        rigid = np.eye(4)
        rigid[:3, :3] = _rotation(motion[t, 3:])
        rigid[:3, 3] = centre + motion[t, :3] - rigid[:3, :3] @ centre
        m = a_inv @ rigid @ a  # reference voxel → moved voxel
        out[..., t] = ndimage.affine_transform(
            series[..., t], m[:3, :3], m[:3, 3], order=1, mode="nearest"
        )
    return out


def simulate_dsc(
    phantom: Phantom,
    rng: np.random.Generator,
    constants,
    *,
    n_timepoints: int = 60,
    tr_s: float = 1.5,
    te_s: float = 0.03,
    snr: float = 100.0,
    motion_mm: float = 0.0,
    relaxivity_ratio: float = 1.0,
    chunk_voxels: int = 2048,
    tumour_leakage_per_s: float = 0.0,
    artery_blood_fraction: tuple[float, float] | None = None,
    aif_peak_r2s: tuple[float, float] = AIF_PEAK_DELTA_R2S,
    aif_arrival_s: tuple[float, float] = AIF_ARRIVAL_S,
) -> DSCSimulation:
    """Simulate the DSC series of ``phantom`` and its truth maps (see the module docstring).

    ``aif_peak_r2s``: the range (1/s) the arterial peak ΔR2* is drawn from (a lower one: a
    smaller dose or a longer injection); ``aif_arrival_s`` the range of the bolus's arterial
    arrival after the first frame (s; a later injection, or a longer baseline).

    ``tumour_leakage_per_s`` (k2, 1/s; 0: none) and ``artery_blood_fraction`` ((low, high);
    None: pure arterial blood) are the optional contrast leakage and partial-volume arteries
    of the module docstring.

    ``constants`` is a :class:`bolus.config.PerfusionConstants`; ``rng`` draws the AIF,
    the venous curve, the motion and the noise. ``snr`` = S0_GM/σ (inf or None: no noise).
    Tissue curves are computed ``chunk_voxels`` at a time (memory ≈ 0.1 MB per voxel).
    """
    time_s = np.arange(n_timepoints) * float(tr_s)
    n_fine = int(np.ceil(time_s[-1] / FINE_DT_S + 1e-9)) + 2
    t_fine = np.arange(n_fine) * FINE_DT_S
    sample = _sampler(time_s, n_fine)

    params = {
        "arrival_s": rng.uniform(*aif_arrival_s),
        "alpha": rng.uniform(2.5, 3.5),
        "beta_s": rng.uniform(1.2, 1.8),
        "recirculation_fraction": rng.uniform(0.08, 0.15),
        "recirculation_delay_s": rng.uniform(7.0, 10.0),
    }
    aif_peak_r2s = rng.uniform(*aif_peak_r2s)
    aif = arterial_input(t_fine, peak_mM=1.0, **params)
    aif *= aif_peak_r2s / BLOOD_RELAXIVITY / aif.max()
    vof_delay, vof_dispersion = np.round(rng.uniform(5.0, 7.0), 1), rng.uniform(2.5, 3.5)
    vof = VOF_AREA_RATIO * local_aif(t_fine, aif, vof_delay, vof_dispersion)
    params.update(
        aif_peak_delta_r2s=aif_peak_r2s, vof_delay_s=vof_delay, vof_dispersion_s=vof_dispersion
    )

    labels = phantom.labels
    shape4 = phantom.grid.shape + (n_timepoints,)
    conc = np.zeros(shape4, np.float32)
    conc[labels == ARTERY] = sample(aif)
    conc[labels == VEIN] = sample(vof)
    sp = SCALP_PERFUSION
    scalp_local = local_aif(t_fine, aif, sp["delay_s"], sp["dispersion_s"])
    conc[labels == SCALP] = sample(
        tissue_concentration(
            t_fine, scalp_local, sp["cbf"], 60.0 * sp["cbv"] / sp["cbf"], sp["shape"], constants
        )
    )

    brain = phantom.brain
    cbf, mtt = phantom.cbf[brain], phantom.mtt_s[brain]
    k, delay, disp = (
        phantom.residue_shape[brain],
        phantom.delay_s[brain],
        phantom.dispersion_s[brain],
    )
    curves = np.empty((cbf.size, n_timepoints))
    leak_integral = np.zeros((cbf.size, n_timepoints)) if tumour_leakage_per_s else None
    ttp = np.empty(cbf.size)
    tmax = np.empty(cbf.size)
    # the dispersed residue h_β ⊗ R is unimodal and peaks before (MTT + β)/2: its argmax is
    # found on a window of 1.5·(MTT + β) + 5 s, per chunk of voxels sorted by MTT + β
    order = np.argsort(mtt + disp, kind="stable")
    for s in range(0, cbf.size, chunk_voxels):
        ix = order[s : s + chunk_voxels]
        blood = local_aif(t_fine, aif, delay[ix], disp[ix])
        c = tissue_concentration(t_fine, blood, cbf[ix], mtt[ix], k[ix], constants)
        curves[ix] = sample(c)
        if leak_integral is not None:  # ∫₀ᵗ C_a,local(τ)dτ (mM·s), for the leakage term
            leak_integral[ix] = sample(np.cumsum(blood, axis=-1) * FINE_DT_S)
        ttp[ix] = t_fine[np.argmax(c, axis=-1)]
        window = 1.5 * float(np.max(mtt[ix] + disp[ix])) + 5.0
        n_short = min(n_fine, int(np.ceil(window / FINE_DT_S)) + 1)
        tmax[ix] = effective_residue_peak_time(
            t_fine[:n_short], mtt[ix], k[ix], delay[ix], disp[ix]
        )
    conc[brain] = curves

    r2s = BLOOD_RELAXIVITY * conc
    tissue = ~np.isin(labels, (ARTERY, VEIN))
    r2s[tissue] *= relaxivity_ratio
    leakage = None
    if leak_integral is not None:
        tumour = labels[brain] == TUMOUR
        k2 = np.zeros(cbf.size)
        lo, hi = cbf[tumour].min(initial=0.0), cbf[tumour].max(initial=0.0)
        k2[tumour] = tumour_leakage_per_s * (0.5 + 0.5 * (cbf[tumour] - lo) / max(hi - lo, 1e-9))
        leakage = np.zeros(shape4, np.float32)
        leakage[brain] = -k2[:, None] * BLOOD_RELAXIVITY * leak_integral
        r2s += leakage
    clean = phantom.baseline[..., None] * np.exp(-te_s * r2s)
    artery_fraction = None
    if artery_blood_fraction is not None:
        low, high = artery_blood_fraction
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"artery_blood_fraction must be 0 < low ≤ high ≤ 1, got {low, high}")
        artery = labels == ARTERY
        f = rng.uniform(low, high, int(artery.sum()))
        gm_r2s = r2s[labels == GM].mean(axis=0) if (labels == GM).any() else np.zeros(n_timepoints)
        bias = phantom.bias[artery][:, None]
        clean[artery] = bias * (
            f[:, None] * S0[ARTERY] * np.exp(-te_s * r2s[artery])
            + (1.0 - f[:, None]) * S0[GM] * np.exp(-te_s * gm_r2s)[None, :]
        )
        artery_fraction = np.zeros(phantom.grid.shape, np.float32)
        artery_fraction[artery] = f
    # the head's reference position: its mean over the volumes before the arterial arrival
    n_pre_bolus = int(np.searchsorted(time_s, params["arrival_s"]))
    motion = _motion_trajectory(rng, n_timepoints, motion_mm, n_pre_bolus)
    if motion_mm > 0:
        clean = _move(clean, phantom.grid, motion)
    if snr is not None and not snr > 0:
        raise ValueError(f"snr must be > 0 (inf or None: no noise), got {snr}")
    sigma = 0.0 if snr is None or np.isinf(snr) else S0[GM] / snr
    noisy = np.hypot(
        clean + sigma * rng.standard_normal(shape4), sigma * rng.standard_normal(shape4)
    )

    def brain_map(values, dtype=np.float32):
        out = np.zeros(phantom.grid.shape, dtype)
        out[brain] = values
        return out

    tmax_map = brain_map(tmax)
    truth = {
        "cbf": brain_map(cbf),
        "cbv": brain_map(phantom.cbv[brain]),
        "mtt": brain_map(mtt),
        "tmax": tmax_map,
        "ttp": brain_map(ttp),
        "lesion": (brain & (tmax_map > LESION_TMAX_S)).astype(np.uint8),
        "labels": labels.astype(np.uint8),
        "brain": brain.astype(np.uint8),
    }
    return DSCSimulation(
        phantom=phantom,
        time_s=time_s,
        te_s=float(te_s),
        tr_s=float(tr_s),
        aif_mM=sample(aif),
        vof_mM=sample(vof),
        concentration_mM=conc,
        delta_r2s=r2s.astype(np.float32),
        signal=noisy.astype(np.float32),
        motion=motion,
        truth=truth,
        noise_sigma=sigma,
        parameters={k: float(v) for k, v in params.items()},
        leakage_delta_r2s=leakage,
        artery_fraction=artery_fraction,
    )
