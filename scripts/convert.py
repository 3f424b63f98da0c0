from bolus.smk import run_stage
from bolus.stages import convert_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
run_stage(
    s,
    "convert",
    lambda: convert_subject(
        s.params.row,
        s.params.nifti,
        s.params.json,
        series_rule=s.params.series,
        modality=s.params.modality,
    ),
)
