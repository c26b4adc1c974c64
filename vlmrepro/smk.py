"""Glue for ``script:`` jobs: logging into the rule's log file, with the error message also on the console."""

from __future__ import annotations

import contextlib
import sys
import traceback


@contextlib.contextmanager
def job_logging(snakemake):
    """Log into the rule's log file; also pin torch to the job's threads (parallel jobs must not oversubscribe)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, snakemake.threads))
    console = sys.__stderr__
    with open(snakemake.log[0], "w", buffering=1) as log:
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            yield log
        except BaseException as err:
            traceback.print_exc(file=log)
            print(f"[{snakemake.rule}] {type(err).__name__}: {err}", file=console)
            raise
        finally:
            sys.stdout, sys.stderr = old
