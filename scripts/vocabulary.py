"""Rule vocabulary: gene, bin and label vocabularies, a Hugging Face tokenizer, the context reference."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.contexts.reference import write_vocabulary_dir
    from scgenai_flow.vocab import vocabulary_from_preprocessed

    vocab = vocabulary_from_preprocessed(
        snakemake.input.h5ad, snakemake.params.target_feature, snakemake.input.get("adt")
    )
    write_vocabulary_dir(
        vocab, snakemake.params.method, snakemake.input.get("reference"), snakemake.output[0]
    )
