rule contexts:
    """Token windows of one split with the configured context method."""
    input:
        unpack(
            lambda wc: {
                **adt_input(wc.split),
                **pretrained_for(wc.split),
                **shard_offsets(wc.split),
            }
        ),
        h5ad=f"{R}/preprocessed/{{split}}.h5ad",
        vocab=lambda wc: vocab_for(wc.split),
    output:
        f"{R}/contexts/{{split}}.npz",
    log:
        log("contexts/{split}"),
    benchmark:
        bench("contexts/{split}")
    wildcard_constraints:
        split=r"train|val|predict|predict_\d+",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled(1000, 5),
        runtime=scaled(10, 0.05),
    params:
        settings={
            "method": config["context"]["method"],
            "max_length": config["context"]["max_length"],
            "depth": config["context"]["depth"],
            "seed": config["seed"],
        },
        target_feature=DATA["target_feature"],
        labels_required=lambda wc: base_split(wc.split) != "predict",
    script:
        "../../scripts/contexts.py"
