"""Rule preprocess: filter (train) or align (val, predict) genes, normalise and bin one file."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.io import write_h5ad
    from scgenai_flow.preprocess import PreprocessSettings, preprocess_file
    from scgenai_flow.vocab import Vocabulary

    vocab_dir = snakemake.input.get("vocab")
    trained_genes = Vocabulary.load(vocab_dir).genes if vocab_dir else None
    settings = PreprocessSettings(**snakemake.params.settings)
    result = preprocess_file(snakemake.input.h5ad, settings, trained_genes)
    write_h5ad(result, snakemake.output[0])
