"""`coldstart encoder fit|validate|test --config configs/encoders/<name>.yaml` (LightningCLI).

The model is `encoders.lit.LitContrastive`, the data `encoders.datamodule.ImageTextDataModule`.
Checkpoints go to `<trainer.default_root_dir>/checkpoints` unless `checkpoint.dirpath` says
otherwise. Two groups configure them:
- `last` (ranker.checkpoints.LastCheckpoint): last.ckpt, the latest step, rewritten every
  `last.every_n_train_steps` steps and/or `last.every_n_minutes` and at every epoch end, whatever
  the metrics do; `--ckpt_path last` resumes from it exactly (weights, optimizer, schedule, RNG
  states, and the shard stream's position inside the epoch: ImageTextDataModule.state_dict);
- `checkpoint` (ModelCheckpoint): the kept ones (`monitor`, `save_top_k` = keep K).
Files are written atomically and a damaged one is refused with its path named
(coldstart.ranker.checkpoints.AtomicCheckpointIO). LightningCLI saves the resolved config of every
run next to its logs (trainer.log_dir/config.yaml); keep no file named config.yaml in the
directory you run from.
"""

from __future__ import annotations

import os


def _cli_class():  # noqa: ANN202 - built lazily so `--help` of other commands stays fast
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from coldstart.ranker.checkpoints import LastCheckpoint, with_atomic_checkpoint_io

    class EncoderCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.add_lightning_class_args(LastCheckpoint, "last")
            # last.ckpt is LastCheckpoint's alone (a second writer would race it).
            parser.set_defaults({"checkpoint.save_last": False})

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            if not config.checkpoint.dirpath:
                root = config.trainer.default_root_dir or os.getcwd()
                config.checkpoint.dirpath = os.path.join(root, "checkpoints")
            if not config.last.dirpath:
                config.last.dirpath = config.checkpoint.dirpath

        def _instantiate_trainer(self, config, callbacks):  # noqa: ANN001, ANN202 - LightningCLI's
            config["plugins"] = with_atomic_checkpoint_io(config.get("plugins"))
            return super()._instantiate_trainer(config, callbacks)

    return EncoderCLI


def run_cli(argv: list[str]):  # noqa: ANN201 - returns the LightningCLI (trainer, model, data)
    """Run LightningCLI on argv (e.g. ["fit", "--config", ...]) and return it."""
    import warnings

    # We pass argv explicitly (the dispatcher strips "encoder"); Lightning warns about that.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    # The training loader resumes mid-epoch through the data module's state (see above), which
    # Lightning's check for a stateful DataLoader does not see.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
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
