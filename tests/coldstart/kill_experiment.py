"""`coldstart <args>` that SIGKILLs itself inside the ranker stage (test code, never shipped).

    python tests/coldstart/kill_experiment.py METHOD STEP experiment --config ...

runs the CLI with ranker.train.save_fit_checkpoint wrapped: right after the fit checkpoint of
METHOD at optimizer step STEP is on disk, the process sends itself SIGKILL (no handler, no
cleanup, like `kill -9`). The hook lives here, so no environment variable of the shipped code
can kill a user's run.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


def install(method: str, step: int) -> None:
    import coldstart.ranker.train as train

    original = train.save_fit_checkpoint

    def save_then_die(path: Path, state: dict[str, Any]) -> None:
        original(path, state)
        if Path(path).stem == method and state["loop"]["steps"] == step:
            print(f"[kill] SIGKILL after {method}'s checkpoint at step {step}", file=sys.stderr)
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    train.save_fit_checkpoint = save_then_die


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    from coldstart.cli import main

    sys.exit(main(sys.argv[3:]))
