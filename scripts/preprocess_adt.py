"""Rule preprocess_adt: bin one ADT file, rows in the RNA file's cell order."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from dataclasses import replace

    from scgenai_flow.io import read_obs, write_h5ad
    from scgenai_flow.preprocess import PreprocessSettings, preprocess_adt
    from scgenai_flow.vocab import Vocabulary

    vocab_dir = snakemake.input.get("vocab")
    settings = PreprocessSettings(**snakemake.params.settings)
    features = None
    if vocab_dir:  # align to the trained features, binned as they were
        vocab = Vocabulary.load(vocab_dir)
        features, settings = vocab.adt_features, replace(settings, binning=vocab.binning)
    cells = read_obs(snakemake.input.rna).index
    write_h5ad(preprocess_adt(snakemake.input.adt, cells, settings, features), snakemake.output[0])
