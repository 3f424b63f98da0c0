"""NIfTI reading, writing and resampling onto another grid.

I/O is kept apart from computation (as in nibabel): :func:`load_volume` and
:func:`save_like` are the only functions here that touch files (plus the convenience
:func:`load_on_grid`); :func:`resample_to_grid` works on arrays and affines only.

Conventions
-----------
* An affine maps voxel indices (i, j, k) to world (scanner RAS+) millimetres.
* Resampling is "pull": every target voxel centre is mapped to world by the target
  affine, then to fractional source indices by the inverse source affine, and the source
  is sampled there. Any grid, orientation (RAS, LPS, flipped rows, permuted axes) or
  resolution of the same head therefore lands on the target grid.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

#: Fractional source coordinates within this many voxels of an integer are snapped to it,
#: so that a pure flip / permutation / integer shift stays exact even when the affines
#: went through float32 NIfTI headers (rounding there is ~1e-6 voxel).
_SNAP_VOXELS = 1e-4


def load_volume(path: str | Path, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D or 4D NIfTI as ``(data, affine)``.

    ``data`` is scaled by the header's slope/intercept and returned as ``dtype``
    (float32 by default, float64 on request); ``affine`` is the (4, 4) float64
    voxel→world matrix (sform, else qform, as nibabel chooses).
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"load_volume: dtype must be float32 or float64, not {dtype}")
    img = nib.load(str(path))
    proxy = img.dataobj
    if not hasattr(proxy, "get_unscaled"):  # an image held in memory
        return img.get_fdata(dtype=dtype), np.asarray(img.affine, dtype=np.float64)
    # the stored values, then slope and intercept in ``dtype``: nibabel's get_fdata scales
    # through a float64 copy of the whole series (3.1 s against 0.5 s for a 96×96×63×75
    # int16 series; the values agree to float32 rounding)
    data = np.asarray(proxy.get_unscaled()).astype(dtype, copy=True)
    slope, inter = proxy.slope, proxy.inter
    if slope is not None and np.isfinite(slope) and slope != 1:
        data *= dtype.type(slope)
    if inter is not None and np.isfinite(inter) and inter != 0:
        data += dtype.type(inter)
    return data, np.asarray(img.affine, dtype=np.float64)


def save_like(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    dtype=np.float32,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Write ``data`` with ``affine`` as NIfTI-1 at ``path`` (parent folders created).

    ``dtype`` is the on-disk type: float32 for maps, ``np.uint8`` for masks (boolean or
    0/1 data; float data is rounded, NaN written as 0). ``header``, when given (e.g. the
    converted series' header), is copied so that units and timing fields survive; its
    scaling is reset. Both qform and sform are set to ``affine`` with code 1 (scanner).
    """
    dtype = np.dtype(dtype)
    array = np.asarray(data)
    if dtype.kind in "iub" and array.dtype.kind == "f":
        array = np.rint(np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0))
    array = array.astype(dtype, copy=False)
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(array, affine, header=header.copy() if header is not None else None)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    from bolus.io.atomic import save_image

    return save_image(img, path)  # whole or absent, never half written


def voxel_size_mm(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel edge lengths (mm) along the three array axes of ``affine``."""
    sizes = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    return tuple(float(s) for s in sizes)


def _source_coordinates(
    source_affine: np.ndarray, target_shape: tuple[int, int, int], target_affine: np.ndarray
) -> np.ndarray:
    """Fractional source voxel indices of every target voxel centre, shape (3, N)."""
    to_source = np.linalg.inv(np.asarray(source_affine, float)) @ np.asarray(target_affine, float)
    grid = np.indices(target_shape, dtype=np.float64).reshape(3, -1)
    coords = to_source[:3, :3] @ grid + to_source[:3, 3:4]
    nearest = np.rint(coords)
    return np.where(np.abs(coords - nearest) < _SNAP_VOXELS, nearest, coords)


def resample_to_grid(
    data: np.ndarray,
    source_affine: np.ndarray,
    target_shape: tuple[int, ...],
    target_affine: np.ndarray,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample a 3D volume, or each volume of a 4D series, onto a target grid.

    Parameters
    ----------
    data : array (X, Y, Z) or (X, Y, Z, T)
    source_affine, target_affine : (4, 4) voxel→world matrices
    target_shape : spatial shape of the target grid (a 4th entry is ignored; the time
        axis of ``data`` is kept)
    order : spline order: 0 nearest neighbour (masks, labels), 1 trilinear (maps)
    cval : value of target voxels outside the source field of view

    Returns
    -------
    array of shape ``target_shape[:3] + data.shape[3:]``. ``data`` itself is returned
    (no copy, no interpolation) when both grids are the same. When every target centre
    falls on a source voxel centre (flips, axis permutations, LPS↔RAS, integer shifts,
    integer down-sampling) the voxels are copied exactly, whatever ``order``. Otherwise
    ``order=1`` is trilinear interpolation (weights computed once for all volumes of a
    series), higher orders use :func:`scipy.ndimage.map_coordinates` volume by volume;
    integer data are returned as float64 when ``order > 0``.

    The source field of view is the union of its voxels: a target centre within half a
    voxel of the outermost source centres takes the border value (``mode="nearest"``),
    one further out takes ``cval``.
    """
    from scipy import ndimage

    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise ValueError(f"resample_to_grid: expected a 3D or 4D array, got shape {data.shape}")
    spatial = tuple(int(n) for n in target_shape[:3])
    if len(spatial) != 3:
        raise ValueError(f"resample_to_grid: target_shape {target_shape} is not 3D")
    if spatial == data.shape[:3] and np.allclose(source_affine, target_affine, rtol=0, atol=1e-5):
        return data

    coords = _source_coordinates(source_affine, spatial, target_affine)
    source_shape = np.array(data.shape[:3])[:, None]
    inside = np.all(
        (coords >= -0.5 - _SNAP_VOXELS) & (coords <= source_shape - 0.5 + _SNAP_VOXELS), axis=0
    )
    out_shape = spatial + data.shape[3:]

    on_centres = np.array_equal(coords, np.rint(coords))
    if on_centres or order == 0:
        dtype = data.dtype
        if dtype.kind != "f" and not float(cval).is_integer():
            dtype = np.float64
        index = np.clip(np.rint(coords).astype(np.intp), 0, source_shape - 1)
        out = np.full((coords.shape[1],) + data.shape[3:], cval, dtype=dtype)
        out[inside] = data[index[0, inside], index[1, inside], index[2, inside]]
        return out.reshape(out_shape)

    if data.dtype.kind != "f":
        data = data.astype(np.float64)
    volumes = data.reshape(data.shape[:3] + (-1,))
    if order == 1:
        out = _trilinear(volumes, coords)
    else:
        out = np.empty((coords.shape[1], volumes.shape[3]), dtype=data.dtype)
        for t in range(volumes.shape[3]):
            out[:, t] = ndimage.map_coordinates(
                volumes[..., t], coords, order=order, mode="nearest"
            )
    out[~inside] = cval
    return out.reshape(out_shape)


def _trilinear(volumes: np.ndarray, coords: np.ndarray, chunk: int = 32768) -> np.ndarray:
    """Trilinear samples of ``volumes`` (X, Y, Z, T) at ``coords`` (3, N), border values
    extended; the same as ``map_coordinates(order=1, mode="nearest")`` per volume, but the
    8 corner indices and weights are computed once for all T volumes."""
    shape = np.array(volumes.shape[:3])[:, None]
    out = np.empty((coords.shape[1], volumes.shape[3]), dtype=volumes.dtype)
    for start in range(0, coords.shape[1], chunk):
        c = np.clip(coords[:, start : start + chunk], 0, shape - 1)
        low = np.floor(c).astype(np.intp)
        frac = c - low
        # on a grid plane the far corner gets weight 0: point it at the near one, so a
        # NaN neighbour (e.g. outside a vendor map's brain) does not leak in as 0·NaN
        high = np.where(frac > 0, np.minimum(low + 1, shape - 1), low)
        frac = frac.astype(volumes.dtype)
        acc = np.zeros((c.shape[1], volumes.shape[3]), dtype=volumes.dtype)
        for corner in range(8):
            bits = [(corner >> axis) & 1 for axis in range(3)]
            index = [high[a] if bits[a] else low[a] for a in range(3)]
            weight = np.prod([frac[a] if bits[a] else 1 - frac[a] for a in range(3)], axis=0)
            acc += weight[:, None] * volumes[index[0], index[1], index[2]]
        out[start : start + chunk] = acc
    return out


def load_on_grid(
    path: str | Path,
    target_shape: tuple[int, ...],
    target_affine: np.ndarray,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Read a NIfTI (e.g. a reference map or lesion mask in its own grid) and resample it
    onto the target grid (e.g. the subject's DSC grid). Use ``order=0`` for masks."""
    data, affine = load_volume(path)
    return resample_to_grid(data, affine, target_shape, target_affine, order=order, cval=cval)


def save_raw(
    raw: np.ndarray, header: nib.Nifti1Header, affine: np.ndarray, path: str | Path,
    slope: float = 1.0, inter: float = 0.0,
) -> Path:  # fmt: skip
    """Write stored values ``raw`` with the scaling ``slope``, ``inter`` kept as given
    (value = raw × slope + inter), ``header``'s other fields (units, timing, descrip) and
    ``affine`` as qform and sform with the header's codes (1 where unset).

    nibabel re-derives an integer image's scaling when it saves one (the stored values
    change); a converted series must keep the converter's stored values and scaling.
    """
    import gzip
    import io

    from nibabel.volumeutils import array_to_file

    from bolus.io.atomic import atomic_path

    raw = np.asarray(raw)
    hdr = nib.Nifti1Header.from_header(header)
    hdr.set_data_dtype(raw.dtype)
    hdr.set_data_shape(raw.shape)
    qcode = int(header["qform_code"]) or 1 if isinstance(header, nib.Nifti1Header) else 1
    scode = int(header["sform_code"]) or 1 if isinstance(header, nib.Nifti1Header) else 1
    hdr.set_qform(affine, code=qcode)
    hdr.set_sform(affine, code=scode)
    hdr["scl_slope"], hdr["scl_inter"] = slope, inter
    hdr.extensions.clear()
    hdr.set_data_offset(352)
    buffer = io.BytesIO()
    hdr.write_to(buffer)
    array_to_file(raw, buffer, raw.dtype, offset=352, order="F")
    path = Path(path)
    with atomic_path(path) as tmp:
        data = buffer.getvalue()
        tmp.write_bytes(gzip.compress(data, compresslevel=1) if path.name.endswith(".gz") else data)
    return path
