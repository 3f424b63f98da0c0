"""The deconvolution methods: one entry each, the one place that names them.

Each :class:`DeconvolutionMethod` knows its config option keys (in the ``svd`` section of the
config schema, which holds their defaults and documentation) and the keyword of
:class:`bolus.perfusion.deconvolution.SVDDeconvolution` each one sets. The schema's list of
allowed ``svd.methods``, the workflow's per-method rules, the study tables' method order and
the ``bolus maps --method`` choices all come from :data:`METHODS`. This module imports
nothing heavy: Snakemake reads it while it parses the workflow.

A new method: one entry here, its option keys (with defaults) in the schema's ``svd``
section, and its algorithm in :class:`~bolus.perfusion.deconvolution.SVDDeconvolution`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeconvolutionMethod:
    """``options``: config key of the ``svd`` section → SVDDeconvolution keyword."""

    name: str
    circulant: bool
    options: dict[str, str]
    reference: str

    def keywords(self, svd: dict) -> dict:
        """SVDDeconvolution keywords from a (defaults-filled) ``svd`` config section."""
        return {keyword: svd[key] for key, keyword in self.options.items()}

    def config(self, svd: dict) -> dict:
        """The part of the ``svd`` section this method reads (a rule's params: editing
        another method's option reruns nothing of this one)."""
        return {key: svd[key] for key in self.options}


METHODS: dict[str, DeconvolutionMethod] = {
    m.name: m
    for m in (
        DeconvolutionMethod(
            "ssvd", False, {"ssvd_threshold": "threshold"}, "Østergaard et al. 1996"
        ),
        DeconvolutionMethod("csvd", True, {"csvd_threshold": "threshold"}, "Wu et al. 2003"),
        DeconvolutionMethod(
            "osvd", True, {"osvd_oscillation_index": "oscillation_index"}, "Wu et al. 2003"
        ),
    )
}


def get_method(name: str) -> DeconvolutionMethod:
    try:
        return METHODS[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"unknown deconvolution method {name!r}; choose one of {tuple(METHODS)}"
        ) from None
