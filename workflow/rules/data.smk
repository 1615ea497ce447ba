SPLITS = ["train", *split_fractions()]


if len(SPLITS) > 1:

    rule split_data:
        """Seeded stratified split of the embedded data (or of a user train file without val)."""
        input:
            **({} if EMBEDDED_DATA else {"source": DATA["train"]}),
            checked=ancient(CHECKED),
        output:
            **{split: f"{R}/data/{split}.h5ad" for split in SPLITS},
            **{
                f"{split}_adt": f"{R}/data/{split}_adt.h5ad"
                for split in SPLITS
                if MULTIOMICS and EMBEDDED_DATA
            },
        log:
            log("split_data"),
        benchmark:
            bench("split_data")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled(1000, 3),
            runtime=scaled(10, 0.02),
        params:
            source=EMBEDDED if EMBEDDED_DATA else DATA["train"],
            use_raw=DATA["use_raw"],
            target_feature=DATA["target_feature"],
            fractions=split_fractions(),
            seed=config["seed"],
        script:
            "../../scripts/split_data.py"
