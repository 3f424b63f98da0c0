# Concentration and automatic AIF (one job per subject), then each SVD method's maps (one job
# per subject and method, reading only that method's options).


rule perfusion:
    input:
        row_files("aif_mask"),
        previous=verdict("{subject}", "preprocess"),
    output:
        verdict=verdict("{subject}", "perfusion"),
    log:
        logfile("{subject}", "perfusion"),
    benchmark:
        benchmark("{subject}", "perfusion")
    conda:
        "../envs/perfusion.yaml"
    params:
        modality=config["modality"],
        aif=config["aif"],
        concentration=config["concentration"],
        row=columns("aif_mask"),
    script:
        "../scripts/perfusion.py"


rule svd_maps:
    input:
        previous=verdict("{subject}", "perfusion"),
    output:
        verdict=verdict("{subject}", paths.svd_stage("{method}")),
    log:
        logfile("{subject}", paths.svd_stage("{method}")),
    benchmark:
        benchmark("{subject}", paths.svd_stage("{method}"))
    conda:
        "../envs/perfusion.yaml"
    params:
        svd=lambda wc: method_config(wc.method),
        constants=config["constants"],
    script:
        "../scripts/svd_maps.py"
