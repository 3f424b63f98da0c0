# Concentration, automatic AIF and the SVD maps of every configured method, in one job.


rule perfusion:
    input:
        mc=sp("{subject}", "mc_dsc"),
        json=sp("{subject}", "dsc_json"),
        mask=sp("{subject}", "brain_mask"),
    output:
        conc=sp("{subject}", "conc"),
        aif=sp("{subject}", "aif_tsv"),
        aif_mask=sp("{subject}", "aif_mask"),
        maps=subject_maps("{subject}", config["svd"]["methods"]),
    log:
        logfile("{subject}", "perfusion"),
    benchmark:
        benchmark("{subject}", "perfusion")
    conda:
        "../envs/perfusion.yaml"
    params:
        prefix=lambda wc: str(Path(OUT) / wc.subject / "perf" / wc.subject),
        config=config,
    script:
        "../scripts/perfusion.py"
