from bolus.smk import logged
from bolus.stages import inspect_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    inspect_subject(s.params.row, s.output[0], s.params.series)
