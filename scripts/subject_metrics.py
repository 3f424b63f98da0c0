from bolus.smk import logged
from bolus.stages import subject_metrics_table

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    subject_metrics_table(
        s.wildcards.subject,
        s.params.prefix,
        s.params.methods,
        s.input.mask,
        s.output[0],
        reference_dir=s.params.row.get("reference_dir"),
        lesion_mask=s.params.row.get("lesion_mask"),
        tissue_labels=s.params.row.get("tissue_labels"),
        config=s.params.config,
    )
