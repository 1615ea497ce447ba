"""Rule preprocess_adt: bin one ADT file, rows in the RNA file's cell order."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from dataclasses import replace

    from scgenai_flow.io import read_obs, write_h5ad
    from scgenai_flow.preprocess import PreprocessSettings, preprocess_adt, recorded_binning
    from scgenai_flow.vocab import Vocabulary

    cells = read_obs(snakemake.input.rna).index
    # proteins are binned as the RNA of the same cells was (auto resolved on the training RNA)
    chunk_cells = snakemake.config["preprocess"]["chunk_cells"]  # how it runs: not a params
    settings = replace(
        PreprocessSettings(**snakemake.params.settings, chunk_cells=chunk_cells),
        binning=recorded_binning(snakemake.input.rna),
    )
    features = None
    if snakemake.input.get("vocab"):  # aligned to a vocabulary: its features, in its bins
        vocab = Vocabulary.load(snakemake.input.vocab)
        features, settings = vocab.adt_features, replace(settings, num_bins=vocab.adt_num_bins)
    write_h5ad(preprocess_adt(snakemake.input.adt, cells, settings, features), snakemake.output[0])
