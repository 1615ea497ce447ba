"""Rule split_data: materialise train / val / predict h5ad files by a seeded stratified split."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.data import load_source, write_splits

    params = snakemake.params
    adata = load_source(params.source, params.use_raw)
    write_splits(adata, params.target_feature, dict(params.fractions), params.seed, dict(snakemake.output))
