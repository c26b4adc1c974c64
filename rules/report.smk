# Tables (our numbers beside the paper's) and the papermill report notebooks rendered to HTML.


localrules:
    build_table,
    check_findings,
    render_notebook,
    render_summary,
    report_index,


rule build_table:
    input:
        table_score_files,
    output:
        "results/tables/{table}.csv",
    log:
        "logs/build_table/{table}.log",
    params:
        cells=lambda wc: table_cells(wc.table),
        paper_table=lambda wc: TABLES[wc.table]["paper_table"],
        not_reproduced=lambda wc: TABLES[wc.table]["not_reproduced"],
    run:
        jobs.build_table(input, output, params, log)


rule render_notebook:
    input:
        notebook=table_notebook,
        table="results/tables/{table}.csv",
    output:
        notebook="results/report/{table}.ipynb",
        html=report(
            "results/report/{table}.html",
            category="Paper tables",
            subcategory="{table}",
            labels={"table": "{table}"},
        ),
    log:
        "logs/render_notebook/{table}.log",
    conda:
        "../envs/report.yaml"
    params:
        kernel=config["report"]["kernel"],
        title=lambda wc: TABLES[wc.table].get("title", TABLES[wc.table]["paper_table"]),
        package=workflow.basedir,  # the notebooks import vlmrepro, also from a conda env
    shell:
        "(PYTHONPATH={params.package} papermill {input.notebook} {output.notebook} -k {params.kernel} --cwd . "
        "-p table_csv {input.table} -p title '{params.title}' -p results_dir results "
        "&& jupyter nbconvert --to html --no-input {output.notebook} --output-dir results/report) > {log} 2>&1 "
        # papermill and nbconvert may fail (a full disk) without naming the file they were writing
        "|| {{ echo 'rendering {output.notebook} and {output.html} failed: see {log}' >&2; exit 1; }}"


rule check_findings:
    input:
        findings.score_refs(FINDINGS),
    output:
        "results/report/findings.json",
    log:
        "logs/check_findings.log",
    params:
        findings=FINDINGS,
    run:
        jobs.check_findings(input, output, params, log)


rule render_summary:
    input:
        notebook=os.path.join(workflow.basedir, "notebooks", "summary.ipynb"),
        tables=expand("results/tables/{table}.csv", table=TABLES),
        findings="results/report/findings.json",
    output:
        notebook="results/report/summary.ipynb",
        html=report("results/report/summary.html", category="Index", labels={"page": "summary"}),
    log:
        "logs/render_summary.log",
    conda:
        "../envs/report.yaml"
    params:
        kernel=config["report"]["kernel"],
        package=lambda wc: workflow.basedir,  # the notebook imports vlmrepro, also from a conda env
    shell:
        "(PYTHONPATH={params.package} papermill {input.notebook} {output.notebook} -k {params.kernel} --cwd . "
        "-p tables_dir results/tables -p findings_json {input.findings} "
        "&& jupyter nbconvert --to html --no-input {output.notebook} --output-dir results/report) > {log} 2>&1 "
        # papermill and nbconvert may fail (a full disk) without naming the file they were writing
        "|| {{ echo 'rendering {output.notebook} and {output.html} failed: see {log}' >&2; exit 1; }}"


rule report_index:
    input:
        tables=expand("results/tables/{table}.csv", table=TABLES),
        pages=expand("results/report/{table}.html", table=TABLES),
        summary="results/report/summary.html",
    output:
        report("results/report/index.html", category="Index", labels={"page": "index"}),
    log:
        "logs/report_index.log",
    run:
        jobs.report_index(input, output, log)
