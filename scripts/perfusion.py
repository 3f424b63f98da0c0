from bolus.smk import run_stage
from bolus.stages import perfusion_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
run_stage(
    s,
    "perfusion",
    lambda: perfusion_subject(
        p.mc, p.json, p.mask, p.conc, p.aif, p.aif_mask, p.prefix, config=p.config,
        out_tissue_mask=p.tissue_mask, user_aif_mask=p.user_aif_mask,
        out_leakage_k2=p.leakage_k2,
    ),
)  # fmt: skip
