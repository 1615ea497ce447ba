"""Rule vocabulary: gene, bin and label vocabularies plus a Hugging Face tokenizer."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.vocab import vocabulary_from_preprocessed

    vocab = vocabulary_from_preprocessed(snakemake.input[0], snakemake.params.target_feature)
    vocab.save(snakemake.output[0])
