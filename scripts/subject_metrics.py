from bolus.smk import run_stage, subject_paths
from bolus.stages import subject_metrics_table

s = snakemake  # noqa: F821 (injected by Snakemake)
p, row = s.params, s.params.row
run_stage(
    s,
    "metrics",
    lambda: subject_metrics_table(
        subject_paths(s), p.methods, reference=p.reference, registration=p.registration,
        lesion=p.lesion, reference_dir=row["reference_dir"], lesion_mask=row["lesion_mask"],
        tissue_labels=row["tissue_labels"],
    ),
)  # fmt: skip
