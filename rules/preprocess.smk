# Motion correction (ANTs rigid) and brain mask (template propagation, refined on the data).


rule preprocess:
    input:
        sp("{subject}", "dsc"),
    output:
        mc=sp("{subject}", "mc_dsc"),
        motion=sp("{subject}", "motion_tsv"),
        mask=sp("{subject}", "brain_mask"),
    log:
        logfile("{subject}", "preprocess"),
    benchmark:
        benchmark("{subject}", "preprocess")
    conda:
        "../envs/preprocess.yaml"
    params:
        motion=config["motion"]["enabled"],
        transform=config["motion"]["transform"],
        fd_threshold_mm=config["motion"]["fd_threshold_mm"],
        user_mask=lambda wc: row(wc).get("brain_mask") or "",
    script:
        "../scripts/preprocess.py"
