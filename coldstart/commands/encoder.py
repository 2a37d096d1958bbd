"""`coldstart encoder fit|validate|test --config configs/encoders/<name>.yaml` (LightningCLI).

The model is `encoders.lit.LitContrastive`, the data `encoders.datamodule.ImageTextDataModule`.
A `checkpoint` group configures ModelCheckpoint (save_last on; dirpath defaults to
<trainer.default_root_dir>/checkpoints, so `--ckpt_path last` resumes across runs). LightningCLI
saves the resolved config of every run next to its logs (trainer.log_dir/config.yaml); keep no
file named config.yaml in the directory you run from.
"""

from __future__ import annotations

import os


def _cli_class():  # noqa: ANN202 - built lazily so `--help` of other commands stays fast
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    class EncoderCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.save_last": True})

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            if not config.checkpoint.dirpath:
                root = config.trainer.default_root_dir or os.getcwd()
                config.checkpoint.dirpath = os.path.join(root, "checkpoints")

    return EncoderCLI


def run_cli(argv: list[str]):  # noqa: ANN201 - returns the LightningCLI (trainer, model, data)
    """Run LightningCLI on argv (e.g. ["fit", "--config", ...]) and return it."""
    import warnings

    # We pass argv explicitly (the dispatcher strips "encoder"); Lightning warns about that.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    from coldstart.encoders.datamodule import ImageTextDataModule
    from coldstart.encoders.lit import LitContrastive

    return _cli_class()(
        LitContrastive,
        ImageTextDataModule,
        args=argv,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "coldstart encoder"},
    )


def main(argv: list[str]) -> int:
    run_cli(argv)
    return 0
