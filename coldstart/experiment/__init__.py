"""The experiment cycle in one command: split -> embed -> index -> ranker -> evaluate -> report.

`run_experiment(config)` runs every stage through a content-addressed artifact store (reused when
its config section and upstream artifacts are unchanged) and writes a run directory with
report.md, metrics.json and PNG plots.
"""

from coldstart.experiment.config import ExperimentConfig, load_config
from coldstart.experiment.pipeline import RunResult, run_experiment

__all__ = ["ExperimentConfig", "RunResult", "load_config", "run_experiment"]
