"""Rule prediction_report: predictions.h5ad with a UMAP, the UMAP figure, metrics."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.annotate import PredictionOutputs, report_predictions

    report_predictions(
        predictions_csv=snakemake.input.predictions,
        source=snakemake.input.source,
        use_raw=snakemake.params.use_raw,
        target_feature=snakemake.params.target_feature,
        seed=snakemake.params.seed,
        outputs=PredictionOutputs(**snakemake.output),
    )
