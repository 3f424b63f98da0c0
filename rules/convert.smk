# DICOM folder (or user NIfTI) → 4D NIfTI + de-identified JSON sidecar.
# Every per-subject rule declares only its verdict (qc/{subject}_{stage}.json) as output and
# the previous stage's verdict as input; the data files it reads and writes come from
# bolus.paths. A subject whose data fail a stage gets a "failed" verdict and the job still
# succeeds, so the cohort and the study tables go on (bolus.smk.run_stage; README "When
# subjects fail").


rule inspect:
    input:
        row_files("dsc_nifti"),
    output:
        verdict("{subject}", "inspect"),
    log:
        logfile("{subject}", "inspect"),
    benchmark:
        benchmark("{subject}", "inspect")
    conda:
        "../envs/convert.yaml"
    params:
        row=columns("dicom_dir", "dsc_nifti"),
        source=fingerprint("dicom_dir"),
        series=config["dicom"]["series"],
    script:
        "../scripts/inspect.py"


rule convert:
    input:
        row_files("dsc_nifti"),
        previous=verdict("{subject}", "inspect"),
    output:
        verdict=verdict("{subject}", "convert"),
    log:
        logfile("{subject}", "convert"),
    benchmark:
        benchmark("{subject}", "convert")
    conda:
        "../envs/convert.yaml"
    params:
        row=columns("dicom_dir", "dsc_nifti"),
        series=config["dicom"]["series"],
        modality=config["modality"],
    script:
        "../scripts/convert.py"
