"""Errors that name the subject, the file and the cause."""

from __future__ import annotations

from pathlib import Path


class SubjectError(RuntimeError):
    """A subject cannot go on: ``<participant_id>: <file>: <cause>``.

    Raised by any stage; the workflow records it in qc.tsv and carries on with the others.
    """

    def __init__(self, subject: str, path: str | Path | None, cause: str):
        self.subject = subject
        self.path = str(path) if path is not None else ""
        self.cause = cause
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{subject or 'unknown subject'}: {where}{cause}")


class ModelSkipped(RuntimeError):
    """A learned model cannot be trained on this cohort (no train subject with reference
    maps, none of the maps it predicts in the references, no TOF-MRA): the message says why.
    The workflow records it as the model's ``skipped`` verdict and scores every other
    method."""
