"""Glue for the Snakemake scripts: run a stage with its log, record subject failures."""

from __future__ import annotations

import logging
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path


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
