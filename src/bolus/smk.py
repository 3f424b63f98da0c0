"""Glue for the Snakemake scripts: run a stage with its log, record subject failures."""

from __future__ import annotations

import logging
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path


def slurm_allocation() -> str | None:
    """One line on what Slurm gave this job (nodes, CPUs, GPUs), from its environment; None
    outside Slurm. The first line of every stage's log on a cluster."""
    import os

    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "?"
    gpus = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") or "none"
    cpus = env.get("SLURM_CPUS_PER_TASK") or env.get("SLURM_CPUS_ON_NODE") or "?"
    return f"slurm job {env['SLURM_JOB_ID']}: nodes={nodes} cpus={cpus} gpus={gpus}"


@contextmanager
def logged(snakemake):
    """Send the stage's output and any error to the rule's log file, then re-raise.

    The log keeps the one-line cause (``sub-07: <file>: <cause>``) at its end, where
    Snakemake's error summary and a tired user look first.
    """
    log = Path(str(snakemake.log[0])) if snakemake.log else None
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        allocation = slurm_allocation()
        if allocation:
            fh.write(allocation + "\n")
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        handler = logging.StreamHandler(fh)
        logging.getLogger().addHandler(handler)
        try:
            yield
        except Exception as exc:
            traceback.print_exc(file=fh)
            fh.write(f"\nERROR {exc}\n")
            raise
        finally:
            logging.getLogger().removeHandler(handler)
            sys.stdout, sys.stderr = old_out, old_err


def subject_paths(snakemake):
    """The job's subject's :class:`bolus.paths.SubjectPaths` (every file its stage reads and
    writes)."""
    from bolus import paths

    return paths.SubjectPaths(snakemake.config["output_dir"], snakemake.wildcards.subject)


def run_stage(snakemake, stage: str, work) -> dict:
    """Run one per-subject stage and leave its verdict (``snakemake.output.verdict``).

    * the previous stage's verdict (``snakemake.input.previous``) is not ok: nothing is
      done, the verdict says ``skipped``;
    * ``work()`` raises :class:`~bolus.io.errors.SubjectError` (bad data: the message names
      subject, file and cause): the verdict says ``failed`` with that reason, the log ends
      with it, and the job *succeeds*, so the other subjects and the study tables go on;
    * ``work()`` raises :class:`~bolus.io.errors.ModelSkipped` (a learned model that was not
      trained on this cohort): the verdict says ``skipped`` with the reason;
    * any other exception is a bug or a broken installation: it is logged and re-raised,
      the job fails, and Snakemake reports it (``--keep-going`` finishes the other jobs).

    Temporary files a killed earlier run left in the subject's folder are removed first.
    """
    from bolus.io.atomic import remove_stale_partials
    from bolus.io.errors import ModelSkipped, SubjectError
    from bolus.qc import read_verdict, write_verdict

    subject = snakemake.wildcards.subject
    out = Path(str(snakemake.output.verdict))
    previous = getattr(snakemake.input, "previous", None)
    with logged(snakemake):
        remove_stale_partials(subject_paths(snakemake).prefix.parent)
        if previous is not None:
            before = read_verdict(str(previous))
            if before.get("status") != "ok":
                print(f"{subject}: {stage} skipped: {before.get('stage')} did not succeed")
                return write_verdict(
                    out, subject, stage, "skipped", f"{before.get('stage')} {before['status']}"
                )
        try:
            work()
        except SubjectError as exc:
            print(f"\nFAILED {stage}: {exc}")
            return write_verdict(out, subject, stage, "failed", str(exc))
        except ModelSkipped as exc:
            print(f"{subject}: {stage} skipped: {exc}")
            return write_verdict(out, subject, stage, "skipped", str(exc))
        return write_verdict(out, subject, stage, "ok")


def cohort_finished(output_dir, log=None, crashed: bool = False) -> int:
    """End-of-run hook (Snakefile ``onsuccess``/``onerror``): print how many subjects failed
    and where to look; returns the exit status to use (0 all completed, 3 some excluded).

    ``crashed``: a job failed on an unexpected error (a bug, a missing tool, no memory), not
    on bad data; the study tables were not (re)written."""
    from bolus.qc import PARTIAL_EXIT_STATUS, summary

    if crashed:
        print(
            "bolus: the run stopped on an unexpected error (not a data problem): see the "
            f"failed job's log above and under {Path(output_dir) / 'logs'}; fix it and re-run "
            "(finished subjects are not redone)",
            file=sys.stderr,
        )
        return 1
    n_failed, _, text = summary(output_dir)
    print(text, file=sys.stderr)
    return PARTIAL_EXIT_STATUS if n_failed else 0
