# Tables (our numbers beside the paper's) and the papermill report notebooks rendered to HTML.


localrules:
    table1,
    render_notebook,
    report_index,


rule table1:
    input:
        table1_score_files,
    output:
        "results/tables/table1.csv",
    log:
        "logs/table1.log",
    conda:
        "../envs/report.yaml"
    params:
        cells=table1_cells(),
    script:
        "../scripts/table1.py"


rule render_notebook:
    input:
        notebook=os.path.join(workflow.basedir, "notebooks", "{table}.ipynb"),
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
    wildcard_constraints:
        table="table[0-9]+",
    conda:
        "../envs/report.yaml"
    params:
        kernel=config["report"]["kernel"],
    shell:
        "(papermill {input.notebook} {output.notebook} -k {params.kernel} --cwd . "
        "-p table_csv {input.table} "
        "&& jupyter nbconvert --to html --no-input {output.notebook} --output-dir results/report) > {log} 2>&1"


rule report_index:
    input:
        tables=["results/tables/table1.csv"],
        pages=["results/report/table1.html"],
    output:
        report("results/report/index.html", category="Index", labels={"page": "index"}),
    log:
        "logs/report_index.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_index.py"
