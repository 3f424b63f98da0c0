"""AIF selection methods and leakage correction against the simulator's truth.

    python benchmarks/bench_aif_leakage.py [--aif] [--leakage]

``--aif``: for pure arteries and two partial-volume settings (each artery voxel holds a
blood fraction f ~ U(low, high), the rest grey matter), on four simulated subjects
(64×64×10, 50 frames), every AIF method of :func:`bolus.perfusion.aif.select_aif` without VOF
scaling (0), with it (1) and with ``auto`` (a: only when ∫VOF/∫AIF > 1.5): Pearson r with the true arterial ΔR2*, the peak-frame error, the area
of the AIF over the true area (CBF and CBV scale with its inverse), the mean blood fraction
of the voxels chosen, and the run time.

``--leakage``: a tumour subject (64×64×10, 60 frames) without leakage and with T1 leakage
(k2 = 4e-4 and 1e-3 /s), and a healthy and a stroke subject without leakage: the median
CBV/truth (oSVD, automatic AIF) per tissue and the brain CBV NRMSE, before and after the
Boxerman–Weisskoff correction (:func:`bolus.perfusion.leakage.boxerman_weisskoff`).
Without flags both run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bolus.perfusion.aif import AIF_METHODS, select_aif
from bolus.perfusion.concentration import concentration_from_signal
from bolus.perfusion.leakage import boxerman_weisskoff
from bolus.perfusion.maps import perfusion_maps
from bolus.simulate.cohort import simulate_subject
from bolus.simulate.phantom import GM, TUMOUR, WM

AIF_SUBJECTS = [(11, 1, "healthy"), (11, 2, "stroke"), (11, 3, "tumour"), (7, 4, "healthy")]
FRACTIONS = [None, (0.2, 0.9), (0.3, 0.6)]


def _subject(seed, number, pathology, **options):
    sim = simulate_subject(seed, number, pathology, matrix=(64, 64, 10), **options)
    search = sim.truth["labels"] >= 3
    conc, _ = concentration_from_signal(sim.signal, sim.te_s, sim.time_s, mask=search)
    return sim, search, conc


def aif_table() -> None:
    print("arteries   subject   method  vof  r       dpeak  area/true  f_chosen  n   s")
    for fraction in FRACTIONS:
        for seed, number, pathology in AIF_SUBJECTS:
            sim, search, conc = _subject(
                seed, number, pathology, n_timepoints=50, artery_blood_fraction=fraction
            )
            truth = np.asarray(sim.aif_delta_r2s)
            true_area = np.trapezoid(truth, sim.time_s)
            for method in AIF_METHODS:
                for vof in (False, True, "auto"):
                    start = time.perf_counter()
                    aif = select_aif(conc, sim.time_s, search, method=method, vof_scaling=vof)
                    took = time.perf_counter() - start
                    r = np.corrcoef(aif.curve, truth)[0, 1]
                    dpeak = int(np.argmax(aif.curve)) - int(np.argmax(truth))
                    area = np.trapezoid(aif.curve, sim.time_s) / true_area
                    f = (
                        sim.artery_fraction[aif.voxel_mask].mean()
                        if sim.artery_fraction is not None
                        else 1.0
                    )
                    label = "pure" if fraction is None else f"{fraction[0]}-{fraction[1]}"
                    print(
                        f"{label:10s} {pathology}{number:<3d} {method:7s} {str(int(vof))[0] if vof != 'auto' else 'a'}    "
                        f"{r:.4f}  {dpeak:+d}     {area:.3f}      {f:.2f}      "
                        f"{int(aif.voxel_mask.sum()):<3d} {took:.2f}"
                    )


def leakage_table() -> None:
    cases = [
        (11, 3, "tumour", 0.0),
        (11, 3, "tumour", 4e-4),
        (11, 3, "tumour", 1e-3),
        (11, 1, "healthy", 0.0),
        (11, 2, "stroke", 0.0),
    ]
    print("subject   k2      curves     tumour  gm     wm     brain NRMSE  fit s")
    for seed, number, pathology, k2 in cases:
        sim, search, conc = _subject(seed, number, pathology, tumour_leakage_per_s=k2)
        aif = select_aif(conc, sim.time_s, search)
        start = time.perf_counter()
        corrected = boxerman_weisskoff(conc, sim.time_s, search).corrected
        took = time.perf_counter() - start
        labels, truth = sim.truth["labels"], sim.truth["cbv"]
        brain = sim.truth["brain"] > 0
        for name, curves in (("raw", conc), ("corrected", corrected)):
            cbv = perfusion_maps(curves, sim.time_s, aif.curve, "osvd", mask=search)["cbv"]
            ratios = []
            for label in (TUMOUR, GM, WM):
                m = labels == label
                ratios.append(f"{np.median(cbv[m] / truth[m]):.3f}" if m.any() else "  -  ")
            nrmse = np.linalg.norm(cbv[brain] - truth[brain]) / np.linalg.norm(truth[brain])
            print(
                f"{pathology}{number:<3d} {k2:<7g} {name:10s} {'  '.join(ratios)}  {nrmse:.3f}"
                f"        {took if name == 'corrected' else 0:.2f}"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aif", action="store_true")
    parser.add_argument("--leakage", action="store_true")
    args = parser.parse_args(argv)
    both = not (args.aif or args.leakage)
    if args.aif or both:
        aif_table()
    if args.leakage or both:
        leakage_table()


if __name__ == "__main__":
    main()
