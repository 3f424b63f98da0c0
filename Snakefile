# bolus: a perfusion-imaging cohort, from DICOM to study tables.
# This file only loads the configuration and includes the rule files.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/convert.smk"
include: "rules/preprocess.smk"
include: "rules/perfusion.smk"
include: "rules/models.smk"
include: "rules/tof.smk"
include: "rules/metrics.smk"
include: "rules/report.smk"
include: "rules/clinical.smk"


rule all:
    default_target: True
    input:
        study_outputs(),
        report_outputs(),
        subject_figure_targets,
        lambda wildcards: clinical_targets(),
