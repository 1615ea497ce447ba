"""Rule preprocess: filter (train) or align (val, predict) genes, normalise and bin one file."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from dataclasses import replace

    from scgenai_flow.io import write_h5ad
    from scgenai_flow.preprocess import PreprocessSettings, preprocess_file
    from scgenai_flow.vocab import Vocabulary

    # chunk_cells says how the job runs: read from the config, not params (it re-runs nothing)
    chunk_cells = snakemake.config["preprocess"]["chunk_cells"]
    settings = PreprocessSettings(**snakemake.params.settings, chunk_cells=chunk_cells)
    trained_genes = None
    if snakemake.input.get("vocab"):  # align to a vocabulary, binned as it was trained
        vocab = Vocabulary.load(snakemake.input.vocab)
        trained_genes, settings = (
            vocab.genes,
            replace(settings, num_bins=vocab.num_bins, binning=vocab.binning),
        )
    result = preprocess_file(snakemake.input.h5ad, settings, trained_genes)
    write_h5ad(result, snakemake.output[0])
