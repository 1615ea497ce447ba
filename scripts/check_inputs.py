"""Rule check_inputs: headers, labels and genes of the input files, reference files, model dirs."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.checks import InputPlan, check_inputs, write_marker

    summary = check_inputs(InputPlan(**snakemake.params.plan))
    write_marker(summary, snakemake.output[0])
