from vlmrepro.io import atomic_path, read_json
from vlmrepro.paper import load_paper_results
from vlmrepro.smk import job_logging
from vlmrepro.tables import build_table

with job_logging(snakemake):
    scores = {path: read_json(path) for path in snakemake.input}
    cells = [dict(c) for c in snakemake.params.cells]
    for cell in cells:
        if "not_run" not in cell:
            cell["score"] = scores[f"results/scores/{cell['model']}/{cell['dataset']}/{cell['setting']}.json"]
    frame = build_table(cells, load_paper_results(), snakemake.params.paper_table)
    with atomic_path(snakemake.output[0]) as tmp:
        frame.to_csv(tmp, index=False)
    print(frame.to_string())
