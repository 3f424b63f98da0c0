from bolus.smk import run_stage, subject_paths
from bolus.stages import convert_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
out = subject_paths(s)
run_stage(
    s,
    "convert",
    lambda: convert_subject(
        s.params.row, out.dsc, out.dsc_json, series_rule=s.params.series, modality=s.params.modality
    ),
)
