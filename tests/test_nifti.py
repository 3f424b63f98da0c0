"""NIfTI I/O and resampling: the same head in any grid lands on the DSC grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bolus.io.nifti import load_on_grid, load_volume, resample_to_grid, save_like, voxel_size_mm

SHAPE = (12, 10, 6)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return rng.normal(size=SHAPE).astype(np.float32)


@pytest.fixture
def affine():
    """An oblique-free RAS grid with anisotropic voxels and an offset origin."""
    a = np.diag([1.8, 1.8, 5.0, 1.0])
    a[:3, 3] = [-90.3, -110.7, -20.0]
    return a


def flipped(data, affine, axes):
    """The same image stored with ``axes`` reversed: world coordinates unchanged."""
    data = np.flip(data, axis=axes)
    affine = affine.copy()
    for ax in axes:
        n = data.shape[ax]
        affine[:3, 3] += affine[:3, ax] * (n - 1)
        affine[:3, ax] *= -1
    return data, affine


@pytest.mark.parametrize("order", [0, 1, 3])
def test_a_flip_along_x_and_y_resamples_back_exactly(volume, affine, order):
    lps, lps_affine = flipped(volume, affine, (0, 1))
    assert not np.array_equal(lps, volume)
    back = resample_to_grid(lps, lps_affine, SHAPE, affine, order=order)
    np.testing.assert_array_equal(back, volume)


def test_permuted_axes_resample_back_exactly(volume, affine):
    permuted = np.transpose(volume, (2, 0, 1))
    permuted_affine = affine.copy()
    permuted_affine[:, :3] = affine[:, [2, 0, 1]]
    back = resample_to_grid(permuted, permuted_affine, SHAPE, affine, order=1)
    np.testing.assert_array_equal(back, volume)


def test_a_flipped_reference_on_disk_comes_back_voxel_identical(volume, affine, tmp_path):
    """float32 headers round the affine; the flip must still be exact."""
    lps, lps_affine = flipped(volume, affine, (0, 1))
    save_like(lps, lps_affine, tmp_path / "ref" / "cbf.nii.gz")
    back = load_on_grid(tmp_path / "ref" / "cbf.nii.gz", SHAPE, affine, order=1)
    np.testing.assert_array_equal(back, volume)


def test_the_same_grid_returns_the_data_unchanged(volume, affine):
    assert resample_to_grid(volume, affine, SHAPE, affine.copy()) is volume


def test_a_one_voxel_translation_shifts_the_data_by_one_voxel(volume, affine):
    shifted_affine = affine.copy()
    shifted_affine[:3, 3] += affine[:3, 0]  # target voxel i sits on source voxel i + 1
    out = resample_to_grid(volume, affine, SHAPE, shifted_affine, order=1, cval=-7.0)
    np.testing.assert_array_equal(out[:-1], volume[1:])
    assert np.all(out[-1] == -7.0)  # beyond the source field of view


def test_a_half_voxel_shift_averages_neighbours_trilinearly(volume, affine):
    shifted_affine = affine.copy()
    shifted_affine[:3, 3] += 0.5 * affine[:3, 1]
    out = resample_to_grid(volume, affine, SHAPE, shifted_affine, order=1)
    np.testing.assert_allclose(
        out[:, :-1], 0.5 * (volume[:, :-1] + volume[:, 1:]), rtol=1e-5, atol=1e-6
    )


def smooth_field(i, j, k):
    """A smooth field of voxel indices; |f''| ≤ 1/16 along i, 1/9 along j, 0 along k."""
    return np.sin(i / 4.0) + np.cos(j / 3.0) + 0.1 * k


# trilinear interpolation error bound h²/8·Σ|f''| for a one-voxel step h
INTERPOLATION_ERROR = (1 / 16 + 1 / 9) / 8


def test_upsampling_twice_samples_the_field_within_interpolation_error(affine):
    coarse = smooth_field(*np.indices(SHAPE, dtype=float))
    fine_affine = affine.copy()
    fine_affine[:3, :3] /= 2.0  # fine voxel 2i sits on coarse voxel i
    fine_shape = tuple(2 * n for n in SHAPE)
    fine = resample_to_grid(coarse, affine, fine_shape, fine_affine, order=1)
    coords = np.indices(fine_shape, dtype=float) / 2.0
    inner = np.all([c <= n - 1 for c, n in zip(coords, SHAPE, strict=True)], axis=0)
    assert np.max(np.abs(fine - smooth_field(*coords))[inner]) <= INTERPOLATION_ERROR
    # back down: every coarse centre is a fine centre, so this is exact
    back = resample_to_grid(fine, fine_affine, SHAPE, affine, order=1)
    np.testing.assert_allclose(back, coarse, atol=1e-12)


def test_a_subdivided_2x_grid_resampled_back_down_agrees_within_interpolation_error(affine):
    """Fine voxels that split each coarse voxel in 2×2×2: centres at ±¼ coarse voxel."""
    coarse = smooth_field(*np.indices(SHAPE, dtype=float))
    fine_affine = affine.copy()
    fine_affine[:3, :3] /= 2.0
    fine_affine[:3, 3] -= 0.25 * affine[:3, :3].sum(axis=1)
    fine_shape = tuple(2 * n for n in SHAPE)
    fine = resample_to_grid(coarse, affine, fine_shape, fine_affine, order=1)
    assert np.isfinite(fine).all() and fine[0, 0, 0] == coarse[0, 0, 0]  # border extends
    back = resample_to_grid(fine, fine_affine, SHAPE, affine, order=1)
    # away from the border (where values are extended, not interpolated)
    interior = (slice(1, -1),) * 3
    assert np.max(np.abs(back - coarse)[interior]) <= INTERPOLATION_ERROR


def test_trilinear_matches_scipy_map_coordinates_for_an_oblique_grid(volume, affine):
    from scipy import ndimage

    angle = np.deg2rad(10)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    oblique = rotation @ affine
    oblique[:3, 3] += [1.1, -0.6, 2.0]
    series = np.stack([volume, volume**2], axis=-1).astype(np.float64)
    out = resample_to_grid(series, affine, SHAPE, oblique, order=1, cval=np.nan)
    coords = (
        np.linalg.inv(affine)
        @ oblique
        @ np.vstack([np.indices(SHAPE).reshape(3, -1), np.ones((1, volume.size))])
    )
    inside = np.all((coords[:3] >= 0) & (coords[:3] <= np.array(SHAPE)[:, None] - 1), axis=0)
    for t in range(2):
        expected = ndimage.map_coordinates(series[..., t], coords[:3], order=1)
        np.testing.assert_allclose(out[..., t].ravel()[inside], expected[inside], rtol=1e-10)
    assert np.isnan(out).any()  # corners of the oblique grid leave the field of view


def test_nan_outside_a_reference_brain_does_not_leak_along_grid_planes(affine):
    ref = np.full(SHAPE, np.nan)
    ref[2:10, 2:8, 1:5] = 1.0
    shifted = affine.copy()
    shifted[:3, 3] += 0.5 * affine[:3, 0]  # half a voxel along x only
    out = resample_to_grid(ref, affine, SHAPE, shifted, order=1)
    np.testing.assert_array_equal(out[2:9, 2:8, 1:5], 1.0)


def test_masks_stay_binary_with_nearest_neighbour(affine):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[3:8, 2:6, 1:4] = 1
    rotated = affine.copy()
    rotated[:3, 3] += [0.7, -0.4, 1.3]
    out = resample_to_grid(mask, affine, SHAPE, rotated, order=0)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1}
    assert abs(int(out.sum()) - int(mask.sum())) <= 0.5 * mask.sum()


def test_4d_series_are_resampled_volume_by_volume(volume, affine):
    series = np.stack([volume, 2 * volume, -volume], axis=-1)
    lps, lps_affine = flipped(series, affine, (0, 1))
    back = resample_to_grid(lps, lps_affine, SHAPE + (3,), affine, order=1)
    np.testing.assert_array_equal(back, series)
    shifted = affine.copy()
    shifted[:3, 3] += 0.25 * affine[:3, 2]
    out = resample_to_grid(series, affine, SHAPE, shifted, order=1)
    assert out.shape == SHAPE + (3,)
    np.testing.assert_allclose(out[..., 1], 2 * out[..., 0], rtol=1e-5, atol=1e-6)


def test_save_like_round_trips_data_affine_and_codes(volume, affine, tmp_path):
    path = save_like(volume, affine, tmp_path / "a" / "b" / "map.nii.gz")
    data, read_affine = load_volume(path)
    np.testing.assert_array_equal(data, volume)
    np.testing.assert_allclose(read_affine, affine, atol=1e-4)
    img = nib.load(str(path))
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert voxel_size_mm(read_affine) == pytest.approx((1.8, 1.8, 5.0), abs=1e-5)


def test_save_like_writes_masks_as_uint8_and_keeps_a_given_header(affine, tmp_path):
    series = nib.Nifti1Image(np.zeros(SHAPE + (4,), np.float32), affine)
    series.header.set_xyzt_units("mm", "sec")
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:5, 2:5, 2:4] = True
    path = save_like(mask, affine, tmp_path / "mask.nii.gz", dtype=np.uint8, header=series.header)
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.uint8
    assert img.shape == SHAPE
    assert img.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask.astype(np.uint8))


def test_save_raw_keeps_stored_values_and_scaling(tmp_path):
    """nibabel re-derives an int16 image's scaling when it saves one (slope 233.4 became
    6.35 with intercept 207984 on a real series, shifting values); ``save_raw`` keeps the
    stored values, slope, intercept, affine and the header's other fields exactly."""
    import json

    from bolus.io.dicom import import_nifti_series
    from bolus.io.nifti import save_raw

    raw = np.random.default_rng(0).integers(-3000, 3000, (5, 4, 3, 12)).astype(np.int16)
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"TE=30;Time=1"
    aff = np.diag([2.0, 2.0, 5.0, 1.0])
    aff[:3, 3] = [-100.5, 80.25, -30.125]
    save_raw(raw, header, aff, tmp_path / "in" / "dsc.nii.gz", 233.4, 0.0)
    (tmp_path / "in" / "dsc.json").write_text(json.dumps({"EchoTime": 0.03, "RepetitionTime": 1.5}))
    import_nifti_series(tmp_path / "in" / "dsc.nii.gz", tmp_path / "out.nii.gz",
                        tmp_path / "out.json", subject="sub-01")  # fmt: skip
    for path in (tmp_path / "in" / "dsc.nii.gz", tmp_path / "out.nii.gz"):
        image = nib.load(path)
        assert image.get_data_dtype() == np.int16
        assert (image.dataobj.slope, image.dataobj.inter) == (np.float32(233.4), 0.0)
        np.testing.assert_array_equal(image.dataobj.get_unscaled(), raw)
        np.testing.assert_array_equal(image.affine, aff)
        assert image.header.get_xyzt_units() == ("mm", "sec")
        assert bytes(image.header["descrip"]).rstrip(b"\0") == b"TE=30;Time=1"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_volume_scales_stored_values_as_nibabel_does(tmp_path, dtype):
    """load_volume applies slope and intercept to the stored values itself (nibabel's
    get_fdata goes through a float64 copy of the whole series): the same values, to the
    requested type's rounding, and the series' Fortran memory order kept."""
    rng = np.random.default_rng(0)
    stored = rng.integers(-2000, 30000, (9, 8, 5, 6)).astype(np.int16)
    image = nib.Nifti1Image(stored, np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header.set_slope_inter(0.37, -12.5)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)
    data, affine = load_volume(path, dtype)
    expected = nib.load(path).get_fdata(dtype=dtype)
    assert data.dtype == dtype and data.flags.f_contiguous
    np.testing.assert_allclose(data, expected, rtol=np.finfo(dtype).eps * 4, atol=0)
    np.testing.assert_allclose(data, stored * 0.37 - 12.5, rtol=1e-6)
    np.testing.assert_array_equal(affine, np.diag([2.0, 2.0, 3.0, 1.0]))
    unscaled = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti1Image(stored, np.eye(4)), unscaled)
    np.testing.assert_array_equal(load_volume(unscaled, dtype)[0], stored)
