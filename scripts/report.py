"""Rule report: the training summary PDF."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.report import summary_from_files

    summary_from_files(
        history_csv=snakemake.input.history,
        model_dir=snakemake.input.model,
        target=snakemake.output[0],
    )
