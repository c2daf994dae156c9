"""The benchmark report: statistics (``tables``, ``verdict``), Markdown (``markdown``), figures (``plots``), console."""

from .console import CONSOLE_METRICS, summary_table
from .markdown import (
    DAGGER,
    ENSEMBLE_HEADLINE,
    FLOOR_MARK,
    GOLD_LABEL,
    KLOM_METRICS,
    NO_INFERENCE,
    ULIRA_METRICS,
    fmt,
    fmt_ci,
    to_markdown_table,
    write_report,
)
from .plots import alpha_omega_figure, alpha_omega_labels, alpha_reliable, method_colour
from .readings import family_of, readings
from .tables import (
    CONTROLS,
    FLOOR_METHOD,
    GOLD_DISTANCES,
    GOLD_ROW,
    HEADLINE,
    PAIRED_METRICS,
    PLOT_METRICS,
    REPORT_METRICS,
    SUMMARY_METRICS,
    deletion_sweep,
    ensemble_floor,
    family_means,
    headline,
    noise_floor,
    paired_comparison,
    read_results,
    summary,
)
from .verdict import (
    VERDICT_AGAINST,
    VERDICT_COLUMNS,
    VERDICT_METRICS,
    VERDICT_REFERENCE_METRICS,
    paired_stats,
    verdict_table,
)

__all__ = ["CONSOLE_METRICS", "summary_table", "DAGGER", "ENSEMBLE_HEADLINE", "FLOOR_MARK", "GOLD_LABEL",
           "KLOM_METRICS", "NO_INFERENCE", "ULIRA_METRICS", "fmt", "fmt_ci", "family_of", "readings",
           "to_markdown_table", "write_report", "alpha_omega_figure", "alpha_omega_labels", "alpha_reliable",
           "method_colour", "CONTROLS", "FLOOR_METHOD", "GOLD_DISTANCES", "GOLD_ROW", "HEADLINE", "PAIRED_METRICS",
           "PLOT_METRICS", "REPORT_METRICS", "SUMMARY_METRICS", "deletion_sweep", "ensemble_floor", "family_means",
           "headline", "noise_floor", "paired_comparison", "read_results", "summary", "VERDICT_AGAINST",
           "VERDICT_COLUMNS", "VERDICT_METRICS", "VERDICT_REFERENCE_METRICS", "paired_stats", "verdict_table"]
