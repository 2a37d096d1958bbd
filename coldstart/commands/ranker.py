"""`coldstart ranker fit|validate|test|predict --config configs/ranker/<name>.yaml`.

LightningCLI (ranker.lit.RankerCLI) over ranker.lit.LitRanker + RankerDataModule. Every run
saves its resolved config.yaml beside its logs; checkpoints carry the model config
(`--ckpt_path last` resumes exactly from the latest step: ranker.checkpoints.LastCheckpoint).
`predict` writes item vectors (warm and cold), user vectors and
the user tower through ranker.lit.RankerExportWriter.
"""

from __future__ import annotations

import warnings

USAGE = """usage: coldstart ranker {fit,validate,test,predict} --config configs/ranker/<name>.yaml [options]

Train and evaluate the cold-start ranker (LightningCLI). Examples:
  coldstart ranker fit --config configs/ranker/movielens.yaml
  coldstart ranker fit --config configs/ranker/movielens.yaml --ckpt_path last        # resume
  coldstart ranker test --config configs/ranker/movielens.yaml --ckpt_path last
  coldstart ranker predict --config configs/ranker/movielens.yaml --ckpt_path last
  coldstart ranker fit --config configs/ranker/synthetic.yaml --trainer.devices=2 --trainer.strategy=ddp
  coldstart ranker fit --config configs/ranker/movielens_sharded.yaml --trainer.devices 2   # TorchRec-sharded tables
  torchrun --nproc-per-node 2 --max-restarts 3 -m coldstart ranker fit --config configs/ranker/synthetic.yaml --trainer.devices 2 --ckpt_path last
      # elastic: a dead worker restarts them all from last.ckpt (docs/sharded-training.md)

The model section is a registered method and flat params, the same vocabulary as the
experiment's `ranker.params` (ranker.methods holds the defaults of both paths):
  --model.method ours --model.params '{dim: 32, id_dropout: 0.5}'
trainer.max_epochs defaults to the method's `epochs`.
`coldstart ranker fit --help` lists every option (model.*, data.*, trainer.*)."""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    from coldstart.ranker.lit import LitRanker, RankerCLI, RankerDataModule
    from coldstart.ranker.sharding import register_strategy

    register_strategy()  # --trainer.strategy torchrec

    # args=argv, not a rewritten sys.argv: DDP's launcher re-runs the real command line (whose
    # leading "ranker" LightningCLI would otherwise warn about).
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    RankerCLI(
        LitRanker,
        RankerDataModule,
        args=argv,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
    return 0
