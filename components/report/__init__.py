"""The benchmark report: statistics (``tables``), Markdown (``markdown``), figures (``plots``), console view."""

from .console import CONSOLE_METRICS, summary_table
from .markdown import DAGGER, fmt, fmt_ci, to_markdown_table, write_report
from .tables import (
    FLOOR_METHOD,
    GOLD_DISTANCES,
    PAIRED_METRICS,
    PLOT_METRICS,
    REPORT_METRICS,
    SUMMARY_METRICS,
    deletion_sweep,
    noise_floor,
    paired_comparison,
    read_results,
    summary,
)

__all__ = ["CONSOLE_METRICS", "summary_table", "DAGGER", "fmt", "fmt_ci", "to_markdown_table", "write_report",
           "FLOOR_METHOD", "GOLD_DISTANCES", "PAIRED_METRICS", "PLOT_METRICS", "REPORT_METRICS", "SUMMARY_METRICS",
           "deletion_sweep", "noise_floor", "paired_comparison", "read_results", "summary"]
