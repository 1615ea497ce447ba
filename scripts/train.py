"""Rules train and finetune: fit the classifier on train windows, keep best and last model dirs."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.runtime import gpus_of
    from scgenai_flow.train import TrainOutputs, train_from_files

    # how the job runs, read from the config (not params: changing them does not retrain)
    loop = snakemake.config["finetune" if snakemake.input.get("pretrained") else "train"]

    train_from_files(
        train_npz=snakemake.input.train,
        val_npz=snakemake.input.val,
        vocab_dir=snakemake.input.vocab,
        config=snakemake.params.config,
        outputs=TrainOutputs(**snakemake.output),
        threads=snakemake.threads,
        pretrained_dir=snakemake.input.get("pretrained"),
        checkpoint=snakemake.params.checkpoint,
        gpus=gpus_of(loop["gpu"], snakemake.resources.gpu),
        processes=loop["processes"],
        expression=(snakemake.input.train_h5ad, snakemake.input.val_h5ad),
    )
