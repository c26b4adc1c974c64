import os
import shutil
from pathlib import Path

from vlmrepro.smk import running_job
from vlmrepro.demo.world import build_world

with running_job(snakemake):
    images = Path(snakemake.output.images)
    work = images.parent / ".part"
    shutil.rmtree(work, ignore_errors=True)
    index = build_world(work, snakemake.params.spec, name=snakemake.wildcards.world)
    # the files first and the images last: Snakemake reruns the job unless every output is in place
    for path in map(Path, snakemake.output.files):
        os.replace(work / path.name, path)
    shutil.rmtree(images, ignore_errors=True)
    os.replace(work / "images", images)
    shutil.rmtree(work)
    print({k: v for k, v in index.items() if k not in ("root", "images")})
