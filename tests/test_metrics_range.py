"""SSIM and PSNR of the subject tables use one data range per map and subject (the
reference's over the brain) in every region."""

from __future__ import annotations

import numpy as np
import pytest

from bolus.evaluate.aggregate import subject_metrics
from bolus.evaluate.metrics import data_range, psnr


def test_region_psnr_uses_the_brain_range():
    """Grey matter holds a narrow range (50–55) of a brain range 0–100: with the brain's
    range its PSNR for an error of 1 everywhere is 10·log10(100²/1) = 40 dB; with its own
    range it would be 10·log10(5²/1) ≈ 14 dB (and negative for errors above the range)."""
    rng = np.random.default_rng(0)
    shape = (10, 10, 6)
    ref = rng.uniform(0, 100, shape)
    ref[0, 0, 0], ref[-1, -1, -1] = 0.0, 100.0
    gm = np.zeros(shape, bool)
    gm[2:6, 2:6, 1:4] = True
    ref[gm] = rng.uniform(50, 55, gm.sum())
    pred = ref + 1.0
    brain = np.ones(shape, bool)
    table = subject_metrics("sub-01", {"m": {"cbf": pred}}, {"cbf": ref}, brain, (1, 1, 1),
                            tissue={"gm": gm})  # fmt: skip
    got = table.query("region == 'gm' and metric == 'psnr'")["value"].item()
    assert got == pytest.approx(10 * np.log10(100.0**2 / 1.0))
    assert psnr(pred, ref, gm) == pytest.approx(10 * np.log10(data_range(ref, gm) ** 2))
    assert data_range(ref, gm) < 5.0
