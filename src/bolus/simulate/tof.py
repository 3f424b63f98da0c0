"""A TOF-MRA-like angiogram of a simulated subject, in its DSC grid (for the TOF → perfusion
model, Kossen et al.).

Vessel tree (MNI coordinates, mm; drawn in the subject's placement ``Phantom.mni_to_world``)
    basilar artery → posterior cerebral arteries (P1, P2, calcarine course); internal carotid
    arteries → terminus → middle cerebral arteries (M1, then a superior and an inferior M2
    trunk over the insula) and anterior cerebral arteries (A1, A2, pericallosal course near
    the midline). Radii: ICA 2.0, basilar 1.5, M1 1.4, M2/A2/P2 1.0 mm. Every distal trunk
    gives off thinner cortical branches (radius 0.7 → 0.35 mm) to random points of the brain
    surface in its own territory, drawn per subject.

Territories (:data:`TERRITORIES`)
    every brain voxel belongs to the distal trunk (ACA, MCA M2 or PCA of either side) nearest
    to it: 1 ACA left, 2 ACA right, 3 MCA left, 4 MCA right, 5 PCA left, 6 PCA right. The
    phantom's stroke (core and penumbra centred on MNI (±42, −15, 20)) lies in the MCA
    territory of its side.

Perfusion deficit
    a stroke subject's MCA on the stroke side is occluded 4 mm after its origin (the M1
    stump is drawn, the M2 trunks and their cortical branches are absent: no inflow, no
    flow-related enhancement), like the phantom's omitted insular arteries.

Image
    static tissue is saturated (TOF): fat-containing scalp 300, WM 170, GM 140, CSF 60,
    skull 30, air 0 (partial-volume mixed through the slice as in the DSC phantom);
    vessels add up to ≈ 1000 × their partial volume in the voxel (a Gaussian profile of
    width max(radius, half the voxel) along each axis) and fade distally (slower inflow
    saturates); Rician noise σ = 12. The DSC grid (3.4 mm, 6 mm slices) blurs the thin branches
    into faint spots, as a coregistered TOF resampled onto the perfusion grid does.

Own acquisition grid and head pose (``grid`` and ``pose`` of :func:`simulate_tof`)
    a real TOF-MRA is a separate 3D acquisition: finer voxels, its own field of view, and the
    head a little elsewhere than during the DSC run. :func:`tof_grid` is such a grid (half
    the DSC's in-plane voxel over 0.9 of its field of view, half its slice spacing over a
    slab two DSC slices longer, centre shifted); :func:`draw_pose` a rigid head movement
    between the two series (rotations up to 4°, translations up to 5 mm). Static tissue is
    then drawn from the MNI152 templates at the TOF's own voxel centres (no DSC blocks), and
    the territories stay on the DSC grid (they are truth for the perfusion maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bolus.simulate.phantom import (
    BRAIN_TISSUE,
    CSF,
    GM,
    SCALP,
    SKULL,
    WM,
    AcquisitionGrid,
    Phantom,
    _apply,
    _polyline,
)

TERRITORIES = {0: "none", 1: "aca_left", 2: "aca_right", 3: "mca_left", 4: "mca_right",
               5: "pca_left", 6: "pca_right"}  # fmt: skip
TISSUE_SIGNAL = {SCALP: 300.0, WM: 170.0, GM: 140.0, CSF: 60.0, SKULL: 30.0}
VESSEL_SIGNAL = 1000.0
NOISE_SIGMA = 12.0
OCCLUSION_MM = 4.0  # length of the M1 stump left on the occluded side
TOF_CENTRE_SHIFT_MM = np.array([3.0, -4.0, 5.0])  # TOF slab centre − DSC slab centre (RAS)


@dataclass
class Vessel:
    """A polyline (MNI mm) with a radius (mm) at each end (linear taper) and a brightness."""

    points: np.ndarray
    radius_mm: tuple[float, float]
    territory: int  # the territory it feeds (0: a proximal vessel)
    brightness: float = 1.0


@dataclass
class TOFSimulation:
    image: np.ndarray  # (X, Y, Z) float32, the angiogram on the DSC grid
    territories: np.ndarray  # (X, Y, Z) uint8, TERRITORIES, 0 outside the brain
    occluded: str | None  # "mca_left" / "mca_right" for a stroke subject, else None
    vessels: list[Vessel]


def _trunks(x: int) -> dict[str, list]:
    """Proximal and distal trunks of one side (x = −1 left, +1 right), MNI mm."""
    return {
        "ica": [(x * 17, 2, -45), (x * 16, 1, -25), (x * 14, 0, -10), (x * 12, 3, 0)],
        "m1": [(x * 12, 3, 0), (x * 25, 3, 2), (x * 38, 2, 3)],
        "m2_superior": [(x * 38, 2, 3), (x * 42, -8, 14), (x * 46, -20, 28), (x * 48, -35, 42)],
        "m2_inferior": [(x * 38, 2, 3), (x * 47, -10, 3), (x * 53, -30, 8), (x * 50, -52, 14)],
        "a1": [(x * 12, 3, 0), (x * 3, 15, 3)],
        "a2": [(x * 3, 15, 3), (x * 3, 28, 10), (x * 3, 34, 21), (x * 3, 26, 33),
               (x * 3, 5, 38), (x * 3, -20, 38), (x * 3, -45, 32)],
        "p1": [(0, -18, -14), (x * 8, -20, -10)],
        "p2": [(x * 8, -20, -10), (x * 22, -35, -4), (x * 26, -60, 2), (x * 16, -82, 8)],
    }  # fmt: skip


BASILAR = [(0, -20, -45), (0, -18, -14)]
RADII = {"ica": (2.0, 1.8), "m1": (1.4, 1.3), "m2_superior": (1.0, 0.8),
         "m2_inferior": (1.0, 0.8), "a1": (1.0, 1.0), "a2": (1.0, 0.7), "p1": (1.1, 1.0),
         "p2": (1.0, 0.7)}  # fmt: skip
DISTAL = {"a2": 1, "m2_superior": 3, "m2_inferior": 3, "p2": 5}  # trunk → territory (left)
BRANCHES_PER_TERRITORY = {1: 6, 3: 12, 5: 6}


def _territory_code(base: int, x: int) -> int:
    return base + (1 if x > 0 else 0)


def _distal_trunk_points() -> tuple[np.ndarray, np.ndarray]:
    """Points of every distal trunk (MNI mm) and the territory of each."""
    pts, codes = [], []
    for x in (-1, 1):
        trunks = _trunks(x)
        for name, base in DISTAL.items():
            line = _polyline(trunks[name], 1.0)
            pts.append(line)
            codes.append(np.full(len(line), _territory_code(base, x)))
    return np.concatenate(pts), np.concatenate(codes)


def arterial_territories(mni_points: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Territory label (:data:`TERRITORIES`) of each point (..., 3) inside ``brain`` (...):
    that of the nearest distal trunk."""
    from scipy.spatial import cKDTree

    trunk_pts, codes = _distal_trunk_points()
    out = np.zeros(brain.shape, np.uint8)
    _, nearest = cKDTree(trunk_pts).query(mni_points[brain])
    out[brain] = codes[nearest]
    return out


def _branches(rng, mni_points, territories, surface, x_side_codes) -> list[Vessel]:
    """Cortical branches from each distal trunk to random surface points of its territory."""
    from scipy.spatial import cKDTree

    trunk_pts, codes = _distal_trunk_points()
    out = []
    for code in x_side_codes:
        base = code - ((code - 1) % 2)
        candidates = mni_points[surface & (territories == code)]
        n = min(BRANCHES_PER_TERRITORY[base], len(candidates))
        if n == 0:
            continue
        ends = candidates[rng.choice(len(candidates), size=n, replace=False)]
        own = trunk_pts[codes == code]
        _, start_idx = cKDTree(own).query(ends)
        for start, end in zip(own[start_idx], ends, strict=True):
            middle = (start + end) / 2 + rng.normal(0, 3.0, 3)
            out.append(Vessel(_polyline([start, middle, end], 0.5), (0.7, 0.35), code, 0.8))
    return out


def vessel_tree(
    rng: np.random.Generator,
    mni_points: np.ndarray,
    brain: np.ndarray,
    occluded_side: int = 0,
) -> tuple[list[Vessel], np.ndarray]:
    """The vessels of one subject (MNI mm) and the territory map of ``mni_points``.

    ``occluded_side`` −1 / +1: that MCA is occluded after :data:`OCCLUSION_MM` of M1 (0: none).
    """
    territories = arterial_territories(mni_points, brain)
    surface = brain & ~ndimage.binary_erosion(brain, iterations=1)
    vessels = [Vessel(_polyline(BASILAR, 0.5), (1.5, 1.5), 0)]
    codes = []
    for x in (-1, 1):
        trunks = _trunks(x)
        for name, radius in RADII.items():
            line = _polyline(trunks[name], 0.5)
            territory = _territory_code(DISTAL[name], x) if name in DISTAL else 0
            if x == occluded_side and name == "m1":
                line = line[: int(OCCLUSION_MM / 0.5) + 1]
            elif x == occluded_side and name.startswith("m2"):
                continue
            vessels.append(Vessel(line, radius, territory))
        for base in (1, 3, 5):
            code = _territory_code(base, x)
            if not (x == occluded_side and base == 3):
                codes.append(code)
    vessels += _branches(rng, mni_points, territories, surface, codes)
    return vessels, territories


def render_vessels(vessels: list[Vessel], world_to_voxel: np.ndarray, spacing_mm, shape):
    """Partial-volume vessel signal in [0, 1] on a voxel grid: each polyline point adds a
    Gaussian profile (width max(radius, half the voxel) per axis), combined by maximum."""
    spacing = np.asarray(spacing_mm, dtype=float)
    out = np.zeros(shape, np.float32)
    offsets = np.stack(
        np.meshgrid(np.arange(-2, 3), np.arange(-2, 3), np.arange(-1, 2), indexing="ij"), -1
    ).reshape(-1, 3)
    for vessel in vessels:
        n = len(vessel.points)
        radius = np.linspace(*vessel.radius_mm, n)
        idx = _apply(world_to_voxel, vessel.points)
        base = np.rint(idx).astype(int)
        cells = base[:, None, :] + offsets[None]  # (n, 75, 3)
        d_mm = (cells - idx[:, None, :]) * spacing
        sigma = np.maximum(radius[:, None, None], spacing / 2.0)
        # peak partial volume: the vessel's cross-section relative to the voxel's
        amplitude = np.clip(np.pi * radius**2 / (spacing[0] * spacing[2]) * 2.0, 0.15, 1.0)
        value = (
            vessel.brightness
            * amplitude[:, None]
            * np.exp(-0.5 * np.sum((d_mm / sigma) ** 2, axis=-1))
        )
        inside = np.all((cells >= 0) & (cells < np.array(shape)), axis=-1)
        c = cells[inside]
        np.maximum.at(out, (c[:, 0], c[:, 1], c[:, 2]), value[inside].astype(np.float32))
    return out


def tof_grid(dsc: AcquisitionGrid) -> AcquisitionGrid:
    """A TOF slab for a subject scanned in DSC grid ``dsc`` (see the module docstring)."""
    nx, ny, nz = dsc.shape
    fov = 0.9 * dsc.pixel_spacing_mm * nx
    coverage = dsc.slice_spacing_mm * (nz + 2)
    centre_lps = dsc.affine_lps @ np.r_[(np.array(dsc.shape) - 1) / 2.0, 1.0]
    centre_ras = np.array([-centre_lps[0], -centre_lps[1], centre_lps[2]]) + TOF_CENTRE_SHIFT_MM
    return AcquisitionGrid.axial((2 * nx, 2 * ny, 2 * (nz + 2)), fov, coverage, centre_ras)


def draw_pose(rng: np.random.Generator, max_rotation_deg=4.0, max_shift_mm=5.0) -> np.ndarray:
    """A rigid head movement (4×4, world RAS mm): TOF-session point = pose @ DSC-session
    point; rotations about the head centre (MNI_CENTRE)."""
    from bolus.simulate.phantom import MNI_CENTRE, _rotation

    rotation = _rotation(np.radians(rng.uniform(-max_rotation_deg, max_rotation_deg, 3)))
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = MNI_CENTRE - rotation @ MNI_CENTRE + rng.uniform(-max_shift_mm, max_shift_mm, 3)
    return pose


def _static_tissue(phantom: Phantom, grid: AcquisitionGrid, world_to_mni, rng) -> np.ndarray:
    """TOF background on ``grid`` from the MNI152 templates (skull and scalp by distance)."""
    from bolus.simulate.phantom import _sample_templates

    brain_p, gm_p, wm_p, outside = _sample_templates(_apply(world_to_mni, grid.voxel_centres_ras()))
    csf_p = np.clip(brain_p - gm_p - wm_p, 0.0, 1.0)
    image = np.zeros(grid.shape)
    image[outside <= 3.0 + 6.0 + 5.0] = TISSUE_SIGNAL[SCALP]
    image[outside <= 3.0 + 6.0] = TISSUE_SIGNAL[SKULL]
    image[outside <= 3.0] = TISSUE_SIGNAL[CSF]
    total = np.maximum(csf_p + gm_p + wm_p, 1e-6)
    mix = (csf_p * TISSUE_SIGNAL[CSF] + gm_p * TISSUE_SIGNAL[GM] + wm_p * TISSUE_SIGNAL[WM]) / total
    inside = brain_p >= 0.5
    image[inside] = mix[inside]
    coords = [np.linspace(-1, 1, n) for n in grid.shape]
    x, y, z = np.meshgrid(*coords, indexing="ij")
    terms = np.stack([x, y, 0.5 * z])
    bias = np.clip(1.0 + np.tensordot(rng.normal(0, 0.06, 3), terms, 1), 0.8, 1.2)
    return ndimage.gaussian_filter(image, 0.5) * bias


def simulate_tof(
    phantom: Phantom,
    rng: np.random.Generator,
    grid: AcquisitionGrid | None = None,
    pose: np.ndarray | None = None,
) -> TOFSimulation:
    """The TOF-like angiogram of ``phantom`` (see the module docstring): on its DSC grid by
    default, else on ``grid`` (e.g. :func:`tof_grid`) with the head moved by ``pose``
    (:func:`draw_pose`; identity by default). ``territories`` are on the DSC grid."""
    own_grid = grid is not None
    grid = phantom.grid if grid is None else grid
    pose = np.eye(4) if pose is None else np.asarray(pose, float)
    world = phantom.grid.voxel_centres_ras()
    mni = _apply(np.linalg.inv(phantom.mni_to_world), world)
    brain = np.isin(phantom.labels, BRAIN_TISSUE)
    side = {"left": -1, "right": 1}.get(phantom.info.get("stroke_side"), 0)
    occluded = side if phantom.pathology == "stroke" else 0
    vessels, territories = vessel_tree(rng, mni, brain, occluded)
    # vessels drawn in world space: MNI → world (→ the TOF session's pose) → voxel
    mni_to_world = pose @ phantom.mni_to_world
    to_world = [
        Vessel(_apply(mni_to_world, v.points), v.radius_mm, v.territory, v.brightness)
        for v in vessels
    ]
    spacing = (grid.pixel_spacing_mm, grid.pixel_spacing_mm, grid.slice_spacing_mm)
    vessel_signal = render_vessels(to_world, np.linalg.inv(grid.affine_ras), spacing, grid.shape)
    if own_grid:
        background = _static_tissue(phantom, grid, np.linalg.inv(mni_to_world), rng)
        return _finish(background, vessel_signal, territories, occluded, vessels, grid, rng)
    background = np.zeros(grid.shape)
    tissue_labels = np.where(np.isin(phantom.labels, BRAIN_TISSUE), GM, phantom.labels)
    tissue_labels = np.where(phantom.labels == WM, WM, tissue_labels)
    for label, value in TISSUE_SIGNAL.items():
        background[tissue_labels == label] = value
    background = ndimage.gaussian_filter(background, (0.6, 0.6, 0.3))
    return _finish(
        background * phantom.bias, vessel_signal, territories, occluded, vessels, grid, rng
    )


def _finish(background, vessel_signal, territories, occluded, vessels, grid, rng):
    clean = background + VESSEL_SIGNAL * vessel_signal
    noisy = np.hypot(
        clean + NOISE_SIGMA * rng.standard_normal(grid.shape),
        NOISE_SIGMA * rng.standard_normal(grid.shape),
    )
    return TOFSimulation(
        image=noisy.astype(np.float32),
        territories=territories,
        occluded=None if not occluded else ("mca_right" if occluded > 0 else "mca_left"),
        vessels=vessels,
    )


def write_tof(
    folder, tof: TOFSimulation, affine: np.ndarray, territories_affine: np.ndarray | None = None
) -> dict[str, Path]:
    """Write ``tof.nii.gz`` (the angiogram, ``affine``) and ``territories.nii.gz`` (on the DSC
    grid: ``territories_affine``, default ``affine``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    affines = {"tof": affine, "territories": affine if territories_affine is None
               else territories_affine}  # fmt: skip
    for name, data in (("tof", tof.image), ("territories", tof.territories)):
        affine = affines[name]
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(img, paths[name])
    return paths
