"""Rule gather_predictions: the shards' prediction tables joined in input order."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.shards import gather_predictions

    gather_predictions(list(snakemake.input), snakemake.output[0])
