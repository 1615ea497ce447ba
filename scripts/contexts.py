"""Rule contexts: token windows of one preprocessed split, with per-cell labels."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.contexts import ContextSettings, windows_from_preprocessed
    from scgenai_flow.finetune import context_settings_of
    from scgenai_flow.shards import shard_offset

    pretrained = snakemake.input.get("pretrained")
    offsets = snakemake.input.get("offsets")
    settings = context_settings_of(pretrained) if pretrained else ContextSettings(**snakemake.params.settings)
    windows_from_preprocessed(
        snakemake.input.h5ad,
        snakemake.input.vocab,
        settings,
        snakemake.params.target_feature,
        labels_required=snakemake.params.labels_required,
        target=snakemake.output[0],
        adt_h5ad=snakemake.input.get("adt"),
        first_cell=shard_offset(offsets, snakemake.wildcards.split) if offsets else 0,
    )
