"""Brain mask: the simulated head's brain is found, its scalp and skull are not."""

from __future__ import annotations

import os

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


def test_template_registration_gives_the_same_mask_in_every_process(head, tmp_path):
    """A rerun gives the same mask: each fresh process registers the template with one ITK
    thread (bolus.preprocess.itk). With ITK's default of one thread per core, the same subject
    gave masks differing by a few rim voxels from one process to the next."""
    import subprocess
    import sys

    np.save(tmp_path / "signal.npy", head.signal)
    np.save(tmp_path / "affine.npy", head.phantom.grid.affine_ras)
    script = (
        "import sys, numpy as np\n"
        "from bolus.preprocess.mask import brain_mask\n"
        "d = sys.argv[1]\n"
        "mask = brain_mask(np.load(d + '/signal.npy'), np.load(d + '/affine.npy'), work_dir=d)\n"
        "np.save(d + '/mask-' + sys.argv[2] + '.npy', mask)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}
    for run in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path), run], check=True, env=env)
    np.testing.assert_array_equal(
        np.load(tmp_path / "mask-a.npy"), np.load(tmp_path / "mask-b.npy")
    )
