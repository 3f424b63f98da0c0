from bolus.smk import logged
from bolus.stages import perfusion_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    perfusion_subject(
        s.input.mc,
        s.input.json,
        s.input.mask,
        s.output.conc,
        s.output.aif,
        s.output.aif_mask,
        s.params.prefix,
        config=s.params.config,
        out_tissue_mask=s.output.tissue_mask,
        user_aif_mask=s.params.user_aif_mask,
    )
