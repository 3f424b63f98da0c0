# TOF-MRA for pix2pix (Kossen et al.): per subject, convert (dcm2niix, or the user's NIfTI)
# and register rigidly onto the DSC mean pre-bolus image (bolus.preprocess.coregister); then
# the cohort's TOF training data (rules/models.smk trains and predicts). Only requested when
# `models` holds a model of the TOF layout.


rule coregister_tof:
    input:
        row_files("tof_nifti"),
        previous=verdict("{subject}", "preprocess"),
    output:
        verdict=verdict("{subject}", "tof"),
    log:
        logfile("{subject}", "tof"),
    benchmark:
        benchmark("{subject}", "tof")
    conda:
        "../envs/preprocess.yaml"
    params:
        row=columns("tof_dicom_dir", "tof_nifti"),
        source=fingerprint("tof_dicom_dir"),
    script:
        "../scripts/coregister_tof.py"


rule tof_training_data:
    input:
        training_inputs("tof", "tof"),
        training_inputs("perfusion", "tof"),
    output:
        str(paths.training_meta(OUT, "tof")),
    log:
        logfile("models", "tof_training_data"),
    conda:
        "../envs/models.yaml"
    params:
        rows=lambda wc: training_rows("tof"),
        registration=config["reference_registration"],
    script:
        "../scripts/tof_training_data.py"
