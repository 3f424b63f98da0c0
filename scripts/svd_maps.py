from bolus import paths
from bolus.smk import run_stage, subject_paths
from bolus.stages import svd_maps_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
method = s.wildcards.method
run_stage(
    s,
    paths.svd_stage(method),
    lambda: svd_maps_subject(subject_paths(s), method, s.params.svd, s.params.constants),
)
