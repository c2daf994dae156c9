"""Pipeline steps with explicit inputs and outputs; all I/O (datasets, artifact store, MLflow) lives here.

    config.py, presets.py   typed benchmark config and the named presets (each with a smoke variant)
    cli.py                  the entry points' shared preamble
    local_servers.py        start/stop helpers for the servers the tests and bench scripts run (not the benchmark's)
    io/                     datasets on disk, the artifact store (local or S3), MLflow tracking
    execution/              plan, compute steps, tasks, the Ray grid, benchmark and tune runs, search spaces
    report/                 statistics, Markdown, plots and the console table

Nothing is imported here, so ``components.cli`` can set thread variables before torch loads.
"""
