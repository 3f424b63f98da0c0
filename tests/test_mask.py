"""Brain mask: the simulated head's brain is found, its scalp and skull are not."""

from __future__ import annotations

import numpy as np
import pytest

from bolus.preprocess.mask import brain_mask, data_brain_estimate
from bolus.simulate import phantom as ph
from bolus.simulate.cohort import simulate_subject


@pytest.fixture(scope="module")
def head():
    return simulate_subject(5, 1, "stroke", matrix=(48, 48, 8), n_timepoints=20)


def test_mask_covers_the_brain_and_leaves_scalp_and_skull_out(head):
    labels = head.phantom.labels
    mask = brain_mask(head.signal, head.phantom.grid.affine_ras)
    intracranial = np.isin(labels, [ph.CSF, ph.GM, ph.WM, ph.ARTERY, ph.CORE, ph.PENUMBRA])
    dice = 2 * (mask & intracranial).sum() / (mask.sum() + intracranial.sum())
    assert dice > 0.95  # partial-volume rim voxels at 3.4 mm are the only disagreement
    assert not (mask & np.isin(labels, [ph.BACKGROUND, ph.SKULL])).any()
    assert (mask & (labels == ph.SCALP)).sum() < 0.01 * mask.sum()
    assert (mask & (labels == ph.ARTERY)).sum() == (labels == ph.ARTERY).sum(), (
        "arteries inside the brain must stay in the mask: the AIF is sought there"
    )


def test_data_estimate_alone_is_close(head):
    estimate = data_brain_estimate(np.median(head.signal, axis=-1))
    brain = np.isin(head.phantom.labels, [ph.GM, ph.WM])
    assert (estimate & brain).sum() > 0.97 * brain.sum()
