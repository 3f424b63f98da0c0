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
        tissue_mask=sp("{subject}", "tissue_mask"),
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
        user_aif_mask=lambda wc: row(wc).get("aif_mask") or "",
    script:
        "../scripts/perfusion.py"
