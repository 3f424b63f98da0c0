from bolus.smk import run_stage, subject_paths
from bolus.stages import perfusion_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
run_stage(
    s,
    "perfusion",
    lambda: perfusion_subject(
        subject_paths(s), modality=p.modality, aif=p.aif, concentration=p.concentration,
        user_aif_mask=p.row["aif_mask"],
    ),
)  # fmt: skip
