import os
import subprocess
import sys
from pathlib import Path

from vlmrepro.harness import lmms_eval_command, read_lmms_eval_score
from vlmrepro.io import write_json
from vlmrepro.smk import running_job

with running_job(snakemake):
    run = snakemake.params.run
    raw = Path(snakemake.params.raw)
    command = lmms_eval_command(sys.executable, os.path.abspath(snakemake.input.model), run, raw)
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=sys.stdout, stderr=sys.stderr)
    write_json(snakemake.output[0], read_lmms_eval_score(raw, run))
