"""Glue for ``script:`` jobs: logging into the rule's log file, with the error message also on the console."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback


def _gpus_wanted(snakemake) -> int:
    """GPUs this job should lease: its ``gpu`` resource, unless its params pin it to the CPU."""
    wanted = int(getattr(snakemake.resources, "gpu", 0) or 0)
    params = snakemake.params
    devices = [getattr(params, "device", None)]
    for name in ("run", "job"):
        spec = getattr(params, name, None)
        if isinstance(spec, dict):
            devices.append(spec.get("device"))
    return 0 if "cpu" in devices else wanted


@contextlib.contextmanager
def running_job(snakemake, threads: int | None = None):
    """Log into the rule's log file; also pin torch to the job's threads (parallel jobs must not oversubscribe),
    or to ``threads`` where the result depends on the thread count (training reduces float sums in another
    order with another count, so its count comes from the config, never from the cores Snakemake gave the job);
    and, for jobs with a ``gpu`` resource on a machine with visible GPUs, lease that many devices of their own
    (see :mod:`vlmrepro.gpus`) and restrict the job to them before anything initialises CUDA."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, threads or snakemake.threads))
    console = sys.__stderr__
    with open(snakemake.log[0], "w", buffering=1) as log, contextlib.ExitStack() as held:
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            wanted = _gpus_wanted(snakemake)
            if wanted > 0:
                from vlmrepro import gpus

                if gpus.visible_gpus():
                    jobs_per_gpu = int(os.environ.get("VLMREPRO_JOBS_PER_GPU") or 1)
                    say = lambda msg: print(f"[{snakemake.rule}] {msg}", file=log)
                    lease = held.enter_context(gpus.acquire_gpus(wanted, jobs_per_gpu=jobs_per_gpu, log=say))
                    lease.apply_env()
                    print(f"[{snakemake.rule}] CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}", file=log)
            yield log
        except BaseException as err:
            traceback.print_exc(file=log)
            print(f"[{snakemake.rule}] {type(err).__name__}: {err}", file=console)
            raise
        finally:
            sys.stdout, sys.stderr = old
