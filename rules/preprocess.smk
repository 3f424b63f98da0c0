# Motion correction (ANTs rigid) and brain mask (template propagation, refined on the data).


rule preprocess:
    input:
        previous=verdict("{subject}", "convert"),
    output:
        verdict=verdict("{subject}", "preprocess"),
    log:
        logfile("{subject}", "preprocess"),
    benchmark:
        benchmark("{subject}", "preprocess")
    conda:
        "../envs/preprocess.yaml"
    params:
        motion=config["motion"]["enabled"],
        transform=config["motion"]["transform"],
        dsc=sp("{subject}", "dsc"),
        mc=sp("{subject}", "mc_dsc"),
        motion_tsv=sp("{subject}", "motion_tsv"),
        mask=sp("{subject}", "brain_mask"),
        fd_threshold_mm=config["motion"]["fd_threshold_mm"],
        user_mask=lambda wc: row(wc).get("brain_mask") or "",
    script:
        "../scripts/preprocess.py"
