"""Rule finetune_vocabulary: the pretrained vocabulary extended by new genes and labels."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.finetune import extended_vocabulary, write_extended_vocabulary

    params = snakemake.params
    vocab = extended_vocabulary(
        snakemake.input.pretrained,
        snakemake.input.h5ad,
        params.target_feature,
        params.min_cells,
        params.seed,
        params.use_raw,
        adt_h5ad=snakemake.input.get("adt"),
    )
    write_extended_vocabulary(vocab, snakemake.input.pretrained, snakemake.output[0])
