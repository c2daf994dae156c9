"""``docs/metrics.md``: the metric registry written out as a table (a test keeps the file in step with it).

    python -m components.report.metric_doc > docs/metrics.md
"""

from __future__ import annotations

import sys

from sragu_core.evaluate import METRICS, VIEWS

__all__ = ["metrics_markdown"]

_KIND = {"model": "value of one model (gold's beside it as `gold_<name>`)", "cell": "compares u with the gold or θ0",
         "pipeline": "recorded by the pipeline"}
_DIRECTION = {"lower": "lower", "higher": "higher", "closer_to_gold": "closer to gold", "n/a": "—"}


def metrics_markdown() -> str:
    lines = ["# Metrics", "",
             "Generated from the metric registry (`sragu_core/evaluate.py`) by "
             "`python -m components.report.metric_doc > docs/metrics.md`; do not edit by hand.", "",
             "Notation: u the unlearned model, gold the model retrained on D_r, θ0 the original; p_u, p_g softmax "
             "outputs; D_f forget set, D_r retain set, D_val, D_test. *Better* is the direction a method wants; "
             "*gold distance* marks distances from the gold, on which an independent retrain (`retrain_indep`) "
             "sets the noise floor. *Shown in* lists the report views that include the metric "
             f"({', '.join(VIEWS)}).", "",
             "| metric | formula | better | kind | gold distance | shown in |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in METRICS.values():
        formula = s.formula.replace("|", "\\|")
        lines.append(f"| `{s.name}` | {formula} | {_DIRECTION[s.direction]} | {_KIND[s.kind]} | "
                     f"{'yes' if s.gold_distance else ''} | {', '.join(v for v in VIEWS if v in s.views)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(metrics_markdown())
