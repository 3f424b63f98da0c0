# TOF-MRA for pix2pix (Kossen et al.): per subject, convert (dcm2niix, or the user's NIfTI)
# and register rigidly onto the DSC mean pre-bolus image (bolus.preprocess.coregister); then
# the cohort's TOF training data, and one prediction job per subject. Only requested when
# `models` holds pix2pix.


rule coregister_tof:
    input:
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
        row=row,
        mc=sp("{subject}", "mc_dsc"),
        tof=sp("{subject}", "tof"),
        tof_json=sp("{subject}", "tof_json"),
        coreg=sp("{subject}", "coreg_tof"),
    script:
        "../scripts/coregister_tof.py"


rule tof_training_data:
    input:
        lambda wc: [verdict(r["participant_id"], "tof") for r in training_rows()],
        lambda wc: [verdict(r["participant_id"], "perfusion") for r in training_rows()],
    output:
        str(paths.tof_training_data_dir(OUT) / "meta.json"),
    log:
        f"{OUT}/logs/models/tof_training_data.log",
    conda:
        "../envs/models.yaml"
    params:
        rows=lambda wc: training_rows(),
        output_dir=lambda wc, output: str(Path(output[0]).parents[3]),
        config=config,
    script:
        "../scripts/tof_training_data.py"


if "pix2pix" in MODELS:

    rule predict_pix2pix:
        input:
            previous=verdict("{subject}", "tof"),
            model=str(paths.model_file(OUT, "pix2pix")),
        output:
            verdict=verdict("{subject}", "predict_pix2pix"),
        log:
            logfile("{subject}", "predict_pix2pix"),
        benchmark:
            benchmark("{subject}", "predict_pix2pix")
        conda:
            "../envs/models.yaml"
        params:
            output_dir=lambda wc, output: str(Path(output.verdict).parents[1]),
            maps=lambda wc: model_map_paths(wc.subject, "pix2pix"),
            config=config,
        script:
            "../scripts/predict_pix2pix.py"
