from bolus.smk import run_stage
from bolus.stages import subject_metrics_table

s = snakemake  # noqa: F821 (injected by Snakemake)
p, row = s.params, s.params.row
run_stage(
    s,
    "metrics",
    lambda: subject_metrics_table(
        s.wildcards.subject, p.prefix, p.methods, p.mask, p.metrics,
        reference_dir=row.get("reference_dir"), lesion_mask=row.get("lesion_mask"),
        tissue_labels=row.get("tissue_labels"), config=p.config,
    ),
)  # fmt: skip
