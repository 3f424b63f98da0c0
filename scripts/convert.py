from bolus.smk import logged
from bolus.stages import convert_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    convert_subject(s.params.row, s.output.nifti, s.output.json, series_rule=s.params.series)
