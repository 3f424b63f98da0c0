from bolus.preprocess.coregister import tof_stage
from bolus.smk import run_stage, subject_paths

s = snakemake  # noqa: F821 (injected by Snakemake)
out = subject_paths(s)
run_stage(
    s,
    "tof",
    lambda: tof_stage(s.params.row, out.mc_dsc, out.tof, out.tof_json, out.coreg_tof, out.pid),
)
