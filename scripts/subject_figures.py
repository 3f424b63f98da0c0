from bolus.evaluate.report import subject_figures_after
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
with logged(s):
    subject_figures_after(
        s.input.previous, s.wildcards.subject, p.prefix, p.methods, p.mask, p.aif, p.motion,
        *s.output,  # montage, aif, motion
        reference_dir=p.row.get("reference_dir"), config=p.config,
    )  # fmt: skip
