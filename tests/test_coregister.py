"""Coregistration onto the DSC grid (bolus.preprocess.coregister): TOF-MRA and reference maps."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ants")

from bolus.preprocess.coregister import (  # noqa: E402
    displacement_mm,
    register_reference_maps,
    register_rigid,
    relative_cbv,
)
from bolus.preprocess.motion import pre_bolus_reference  # noqa: E402
from bolus.simulate.cohort import simulate_subject  # noqa: E402
from bolus.simulate.tof import draw_pose, simulate_tof, tof_grid  # noqa: E402


@pytest.fixture(scope="module")
def subject():
    # the default DSC grid: 64 × 64 × 12, 3.44 mm in-plane, 6 mm slices
    return simulate_subject(5, 2, "stroke", n_timepoints=20)


def test_a_known_head_movement_between_tof_and_dsc_is_recovered(subject, tmp_path):
    grid = subject.phantom.grid
    fixed, _ = pre_bolus_reference(subject.signal)
    tof_g = tof_grid(grid)  # 1.55 mm in-plane, 3 mm slices, another field of view
    pose = draw_pose(np.random.default_rng([5, 2]))  # up to 4° and 5 mm
    tof = simulate_tof(subject.phantom, np.random.default_rng(1), grid=tof_g, pose=pose)
    warped, transform, _ = register_rigid(
        tof.image, tof_g.affine_ras, fixed, grid.affine_ras, work_dir=tmp_path
    )
    brain = grid.voxel_centres_ras()[subject.phantom.brain]
    before = displacement_mm(np.eye(4), pose, brain)
    after = displacement_mm(transform, pose, brain)
    # Tolerance from the voxel size: on average within half a DSC voxel in-plane (1.7 mm),
    # nowhere more than one (3.4 mm); registration of a 6 mm-slice EPI cannot do much
    # better. Measured: mean 0.7–0.9 mm, max 0.9–1.7 mm (from 3.8–5.5 mm mean before).
    in_plane = grid.pixel_spacing_mm
    assert before.mean() > 2.0  # the movement is there to be found
    print(
        f"head moved {before.mean():.2f} mm; after registration {after.mean():.2f} mm mean, {after.max():.2f} mm max"
    )
    assert after.mean() < 0.5 * in_plane, (before.mean(), after.mean())
    assert after.max() < in_plane
    assert warped.shape == grid.shape
    # transforms were written to a private folder in work_dir and removed with it
    assert list(tmp_path.iterdir()) == []


def test_reference_maps_in_another_grid_are_registered_onto_the_dsc_grid(subject, tmp_path):
    import nibabel as nib

    from bolus.simulate.cohort import write_truth

    grid = subject.phantom.grid
    write_truth(tmp_path / "truth", subject)
    # the same truth maps written as if their header were off by a rigid movement: a world-
    # coordinate resampling would misplace them by that movement; registration finds it
    pose = draw_pose(np.random.default_rng([7, 1]), max_rotation_deg=3.0, max_shift_mm=6.0)
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("cbf", "cbv", "tmax"):
        img = nib.load(tmp_path / "truth" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(img.get_fdata(), pose @ img.affine), moved / f"{name}.nii.gz")
    # the concentration series' curve areas follow CBV: ΔR2* ∝ −ln(S/S0)
    conc = -np.log(np.clip(subject.signal / subject.signal[..., :3].mean(-1, keepdims=True),
                           1e-3, None))  # fmt: skip
    maps, transform = register_reference_maps(
        moved, relative_cbv(conc), grid.affine_ras, work_dir=tmp_path, return_transform=True
    )
    assert set(maps) == {"cbf", "cbv", "tmax"}
    # A map voxel v sits at pose·A·v in the moved header but truly at A·v: the transform
    # (DSC world → reference world) must be the pose. Tolerance as for the TOF: on average
    # within half a DSC voxel in-plane, nowhere more than one.
    brain = grid.voxel_centres_ras()[subject.phantom.brain]
    before = displacement_mm(np.eye(4), pose, brain)
    after = displacement_mm(transform, pose, brain)
    print(f"reference maps off by {before.mean():.2f} mm; registered {after.mean():.2f} mm "
          f"mean, {after.max():.2f} mm max")  # fmt: skip
    assert before.mean() > 2.0
    assert after.mean() < 0.5 * grid.pixel_spacing_mm and after.max() < grid.pixel_spacing_mm
    # and the maps now agree better with the truth than a world-coordinate resampling
    truth = nib.load(tmp_path / "truth" / "cbf.nii.gz").get_fdata()
    from bolus.evaluate.reference import load_reference_maps

    naive = load_reference_maps(moved, grid.shape, grid.affine_ras)["cbf"]
    ok = subject.phantom.brain & np.isfinite(naive) & np.isfinite(maps["cbf"])
    r = np.corrcoef(maps["cbf"][ok], truth[ok])[0, 1]
    r_naive = np.corrcoef(naive[ok], truth[ok])[0, 1]
    print(f"CBF r vs truth: registered {r:.3f}, world coordinates {r_naive:.3f}")
    assert r > r_naive + 0.1, (r, r_naive)
