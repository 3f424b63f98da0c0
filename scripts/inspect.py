from bolus.smk import logged
from bolus.stages import inspect_subject

with logged(snakemake):  # noqa: F821 (injected by Snakemake)
    inspect_subject(snakemake.params.row, snakemake.output[0], snakemake.params.series)  # noqa: F821
