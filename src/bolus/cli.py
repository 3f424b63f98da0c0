"""The ``bolus`` command: one subcommand per stage, over the library (no Snakemake needed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def _config(path: str | None) -> dict:
    from bolus.config import validate_config

    if not path:
        return validate_config({"participants": ""})
    with open(path) as fh:
        return validate_config(yaml.safe_load(fh) or {})


def cmd_simulate(args) -> int:
    from bolus.simulate.cohort import simulate_cohort

    options = {k: v for k, v in vars(args).items() if k in SIMULATION_OPTIONS}
    for key in ("matrix", "aif_peak_r2s"):
        if key in options:
            options[key] = tuple(options[key])
    participants = simulate_cohort(
        args.out, args.subjects, args.seed, jobs=args.jobs, modality=args.modality,
        dicom_storage=args.dicom_storage, **options,
    )  # fmt: skip
    if args.fault:
        from bolus.simulate.faults import SUBJECT_FAULTS, add_faulty_subjects, break_participants

        kinds = [k for k in args.fault if k in SUBJECT_FAULTS]
        add_faulty_subjects(participants, kinds, args.seed, **options)
        for kind in (k for k in args.fault if k not in SUBJECT_FAULTS):
            break_participants(participants, kind)
    print(participants)
    return 0


def cmd_summary(args) -> int:
    from bolus.smk import cohort_finished

    return cohort_finished(args.output_dir)


def cmd_pretrain(args) -> int:
    import logging

    from bolus.learn.pretrain import SEED, install, pretrain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    target = pretrain(
        args.model, args.out, device=args.device, threads=args.threads, size=args.size,
        epochs=args.epochs, seed=SEED if args.seed is None else args.seed,
    )  # fmt: skip
    print(target)
    if args.install:
        print(install(args.model, args.out))
    return 0


# Options passed to simulate_cohort only when given: its signature holds the defaults.
SIMULATION_OPTIONS = ("matrix", "n_timepoints", "tr_s", "te_s", "snr", "motion_mm", "aif_peak_r2s")


def cmd_convert(args) -> int:
    from bolus.stages import convert_subject

    source = Path(args.source)
    row = {"participant_id": args.subject}
    is_nifti = source.name.endswith((".nii", ".nii.gz"))
    row["dsc_nifti" if is_nifti else "dicom_dir"] = str(source)
    prefix = Path(args.out_prefix)
    convert_subject(
        row,
        f"{prefix}_dsc.nii.gz",
        f"{prefix}_dsc.json",
        series_rule=args.series,
        modality=args.modality,
    )
    return 0


def _prefix_paths(prefix: str):
    """SubjectPaths whose files are ``<prefix>_…`` (``prefix`` = ``<folder>/<subject>``)."""
    from bolus.paths import SubjectPaths

    return SubjectPaths.at_prefix(prefix)


def cmd_preprocess(args) -> int:
    from bolus.stages import preprocess_subject

    subject = _prefix_paths(args.out_prefix).with_input(dsc=Path(args.dsc))
    subject.mc_dsc.parent.mkdir(parents=True, exist_ok=True)
    preprocess_subject(subject, {"enabled": not args.no_motion})
    return 0


def cmd_tof(args) -> int:
    from bolus.preprocess.coregister import tof_stage

    source = Path(args.source)
    is_nifti = source.name.endswith((".nii", ".nii.gz"))
    row = {"participant_id": args.subject, "tof_nifti" if is_nifti else "tof_dicom_dir": source}
    prefix = args.out_prefix
    tof_stage(
        row,
        args.mc_dsc,
        f"{prefix}_tof.nii.gz",
        f"{prefix}_tof.json",
        f"{prefix}_desc-coreg_tof.nii.gz",
        args.subject,
    )
    return 0


def cmd_perfusion(args) -> int:
    from bolus.stages import perfusion_and_maps

    subject = _prefix_paths(args.out_prefix).with_input(
        mc_dsc=Path(args.dsc), dsc_json=Path(args.json), brain_mask=Path(args.mask)
    )
    perfusion_and_maps(subject, _config(args.config))
    return 0


def cmd_maps(args) -> int:
    from bolus import paths
    from bolus.stages import maps_from_files

    config = _config(args.config) if args.config else {}  # else the schema's defaults
    out = {name: paths.map_prefix(args.out_prefix, args.method, name) for name in paths.MAPS}
    written = maps_from_files(
        args.conc, args.aif, args.method, out, args.mask,
        config.get("svd"), config.get("constants"),
    )  # fmt: skip
    for path in written:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    from bolus.perfusion.methods import METHODS as DECONVOLUTION_METHODS

    parser = argparse.ArgumentParser(prog="bolus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "simulate",
        help="simulated DICOM cohort + truth + participants.tsv",
        description="Options left out take the defaults of "
        "bolus.simulate.cohort.simulate_cohort (64×64×12, 60 volumes, TR 1.5 s, TE 30 ms, SNR 100).",
    )
    p.add_argument("out")
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--jobs", type=int, default=1, help="subjects simulated at a time (worker processes)"
    )
    p.add_argument(
        "--modality",
        choices=("dsc", "ctp"),
        default="dsc",
        help="dsc: DSC-MRI DICOM; ctp: the same subjects as CT perfusion DICOM (HU; process "
        "with modality: ctp)",
    )
    p.add_argument(
        "--dicom-storage",
        choices=("classic", "enhanced"),
        default="classic",
        help="classic: one DICOM file per image; enhanced: the dynamic series as one "
        "multi-frame file (Enhanced MR/CT Image Storage, as current Siemens XA and Philips export)",
    )
    unset = argparse.SUPPRESS
    p.add_argument("--matrix", type=int, nargs=3, metavar=("X", "Y", "Z"), default=unset)
    p.add_argument("--timepoints", dest="n_timepoints", type=int, default=unset)
    p.add_argument("--tr", dest="tr_s", type=float, default=unset, help="repetition time (s)")
    p.add_argument("--te", dest="te_s", type=float, default=unset, help="echo time (s)")
    p.add_argument("--snr", type=float, default=unset, help="baseline grey-matter SNR")
    p.add_argument(
        "--motion-mm", dest="motion_mm", type=float, default=unset, help="peak motion (mm)"
    )
    p.add_argument(
        "--aif-peak", dest="aif_peak_r2s", type=float, nargs=2, metavar=("LOW", "HIGH"),
        default=unset, help="range of the arterial peak ΔR2* (1/s; default 70 90)",
    )  # fmt: skip
    from bolus.simulate.faults import COHORT_FAULTS, SUBJECT_FAULTS

    p.add_argument(
        "--fault",
        action="append",
        choices=sorted(SUBJECT_FAULTS) + list(COHORT_FAULTS),
        help="add one subject with this kind of bad input (repeatable; faults.tsv lists them), "
        "or break participants.tsv (duplicate_id, malformed_id, malformed_tsv)",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "summary",
        help="how many subjects failed, and why (from qc.tsv); exit 3 when any did",
    )
    p.add_argument("output_dir", nargs="?", default="results")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("convert", help="DICOM folder or 4D NIfTI → <prefix>_dsc.nii.gz + .json")
    p.add_argument("source", help="DICOM folder, or a 4D NIfTI with a JSON sidecar beside it")
    p.add_argument("out_prefix", help="e.g. results/sub-01/perf/sub-01")
    p.add_argument("--subject", required=True, help="participant_id, for messages")
    p.add_argument("--series", default="most_timepoints", help="series choice (dicom.series)")
    p.add_argument(
        "--modality", choices=("dsc", "ctp"), default="dsc", help="ctp: CT perfusion (no EchoTime)"
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("preprocess", help="motion correction + brain mask")
    p.add_argument("dsc")
    p.add_argument("out_prefix")
    p.add_argument("--no-motion", action="store_true")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser(
        "tof",
        help="TOF-MRA (DICOM folder or NIfTI) → <prefix>_tof.nii.gz + .json, and registered "
        "onto the DSC grid: <prefix>_desc-coreg_tof.nii.gz",
    )
    p.add_argument("source", help="TOF DICOM folder, or a 3D NIfTI")
    p.add_argument("mc_dsc", help="the subject's motion-corrected DSC series (the target grid)")
    p.add_argument("out_prefix", help="e.g. results/sub-01/perf/sub-01")
    p.add_argument("--subject", required=True, help="participant_id, for messages")
    p.set_defaults(func=cmd_tof)

    p = sub.add_parser("perfusion", help="concentration, AIF and SVD maps")
    p.add_argument("dsc", help="motion-corrected 4D series")
    p.add_argument("json", help="sidecar with EchoTime and VolumeTiming")
    p.add_argument("mask", help="brain mask")
    p.add_argument("out_prefix")
    p.add_argument("--config", help="config.yaml (defaults from the schema)")
    p.set_defaults(func=cmd_perfusion)

    p = sub.add_parser("maps", help="SVD maps from a concentration series and AIF.tsv")
    p.add_argument("conc")
    p.add_argument("aif", help="TSV with columns time (s) and concentration")
    p.add_argument("out_prefix")
    p.add_argument("--method", required=True, choices=list(DECONVOLUTION_METHODS))
    p.add_argument("--mask")
    p.add_argument("--config", help="config.yaml (defaults from the schema)")
    p.set_defaults(func=cmd_maps)

    p = sub.add_parser(
        "pretrain",
        help="regenerate a model's shipped weights from the simulator (bolus.learn.pretrain)",
        description="Simulates the model's training voxels across DSC and CT perfusion "
        "protocols with a fixed seed and trains it through the workflow's training engine "
        "(checkpointed every epoch: run it again to resume). Writes DIR/MODEL.pt and its "
        "manifest DIR/MODEL.json; --install copies them into the package.",
    )
    p.add_argument("model")
    p.add_argument("--out", required=True, help="folder of the weights, data and checkpoints")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=None, help="simulation and training seed")
    p.add_argument(
        "--size", type=int, default=None, help="override the recipe's simulated voxels or subjects"
    )
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--install", action="store_true", help="copy the result into the package")
    p.set_defaults(func=cmd_pretrain)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"bolus {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
