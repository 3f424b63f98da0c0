from bolus.evaluate.report import subject_figures
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    subject_figures(
        s.wildcards.subject,
        s.params.prefix,
        s.params.methods,
        s.input.mask,
        s.input.aif,
        s.input.motion,
        *s.output,  # montage, aif, motion
        reference_dir=s.params.row.get("reference_dir"),
        config=s.params.config,
    )
