"""Rule shard_predict: the predict data in contiguous shards, and each shard's first cell."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.shards import write_shards

    write_shards(
        source=snakemake.input.source,
        use_raw=snakemake.params.use_raw,
        targets=list(snakemake.output.shards),
        offsets_csv=snakemake.output.offsets,
        chunk_cells=snakemake.config["preprocess"]["chunk_cells"],  # how it runs: not a params
    )
