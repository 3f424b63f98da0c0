"""ANTs, imported one way in bolus: one ITK thread per process, fixed before ITK's first use.

ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, when its first filter or
image is made, and keeps that count. With more than one thread the same ANTs registration
(Mattes mutual information, affine then SyN) does not repeat exactly from one process to the
next (measured: the MNI mask registered onto one subject in three fresh processes with two
threads gave 2137, 2140 and 2143 brain voxels; with one thread, 2143 every time). A cohort rerun
must give the same maps, so every ANTs call in bolus goes through :func:`load_ants` and uses one
thread; parallelism comes from processes instead (motion correction registers volumes in a
worker pool, Snakemake runs subjects side by side).
"""

from __future__ import annotations

import os

ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


def load_ants():
    """The ``ants`` module, with ITK's thread count fixed to one for this process (and for
    processes forked from it). Must run before any ANTs image is made; every bolus module
    gets ANTs from here."""
    os.environ[ITK_THREADS] = "1"
    import ants as module

    return module
