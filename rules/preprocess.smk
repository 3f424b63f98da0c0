# Motion correction (ANTs rigid) and brain mask (template propagation, refined on the data).


rule preprocess:
    input:
        row_files("brain_mask"),
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
        motion=config["motion"],
        row=columns("brain_mask"),
    script:
        "../scripts/preprocess.py"
