from bolus.preprocess.coregister import tof_stage
from bolus.smk import run_stage

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
run_stage(
    s,
    "tof",
    lambda: tof_stage(p.row, p.mc, p.tof, p.tof_json, p.coreg, s.wildcards.subject),
)
