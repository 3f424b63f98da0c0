from bolus.smk import run_stage
from bolus.stages import subject_metrics_table

s = snakemake  # noqa: F821 (injected by Snakemake)
run_stage(
    s,
    "metrics",
    lambda: subject_metrics_table(
        s.wildcards.subject,
        s.params.prefix,
        s.params.methods,
        s.params.mask,
        s.params.metrics,
        reference_dir=s.params.row.get("reference_dir"),
        lesion_mask=s.params.row.get("lesion_mask"),
        config=s.params.config,
    ),
)
