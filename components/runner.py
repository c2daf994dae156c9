"""Executes a resolved benchmark grid in this process (no Ray) and writes its outputs.

Order per (dataset, model, seed): train θ0 once; per regime select D_f, retrain the gold once, then run
every method and evaluate it against that gold (SPEC §7).  A cell that raises is recorded as
``status="failed"`` with its error and the rest goes on; a diverged method is a result, not a failure.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
import traceback
from importlib import metadata
from pathlib import Path

from sragu_core.metrics import mean_ci

from .presets import Resolved
from .steps import (
    cell_inputs,
    load_splits,
    make_forget,
    method_config,
    pick_device,
    run_unlearning,
    score_cell,
    train_original,
)

__all__ = ["code_version", "package_versions", "preflight", "write_run_header", "run_local", "summary_table"]

_PACKAGES = ("torch", "numpy", "scikit-learn", "scipy", "ray", "mlflow", "weightwatcher", "pyarrow", "boto3")
SUMMARY_COLS = ("forget_acc", "retain_acc", "test_acc", "kl_to_gold", "pd", "mia_auc", "mia_gap", "avg_gap",
                "rte", "method_time_s")


def code_version() -> str:
    """``git describe``-style id of the checkout (``+dirty`` when modified), else ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


def preflight(resolved: Resolved) -> dict:
    """Everything that can fail on bad input, before a single file is written: device and datasets."""
    device = pick_device(resolved.bench.device)
    datasets = {name: load_splits(name, resolved.bench) for name in resolved.bench.datasets}
    return {"device": device, "datasets": datasets}


def write_run_header(resolved: Resolved, out: Path) -> Path:
    """Print and save the resolved config, code version and package versions (STYLE §5)."""
    header = {"config": resolved.as_dict(), "code_version": code_version(), "packages": package_versions()}
    print(json.dumps(header, indent=2))
    run_dir = out / f"{resolved.bench.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "config.json").write_text(json.dumps(header, indent=2))
    return run_dir


def run_local(resolved: Resolved, run_dir: Path, pre: dict) -> list[dict]:
    bench, device = resolved.bench, pre["device"]
    rows: list[dict] = []
    results = (run_dir / "results.jsonl").open("w")
    for ds_name, ds in pre["datasets"].items():
        for model_name in bench.models:
            for seed in bench.seeds:
                original, _ = train_original(ds, model_name, bench, seed=seed, device=device)
                for fcfg in bench.forget_configs():
                    forget = make_forget(ds, fcfg, seed=seed, original=original, device=device)
                    inputs = cell_inputs(ds, forget)
                    gold, gold_sum = run_unlearning("retrain", method_config(resolved, "retrain", model_name),
                                                    original, inputs, seed=seed, device=device)
                    for method in bench.methods:
                        key = {"dataset": ds_name, "model": model_name, "seed": seed,
                               "regime": fcfg.label(), "method": method, "forget_size": len(forget.indices)}
                        try:
                            cfg = method_config(resolved, method, model_name)
                            model, summ = run_unlearning(method, cfg, original, inputs, seed=seed, device=device)
                            row = score_cell(model, gold, original, inputs, seed=seed, device=device,
                                             num_classes=ds.num_classes, gold_time_s=gold_sum["method_time_s"],
                                             method_time_s=summ["method_time_s"])
                            row.update({k: v for k, v in summ.items() if k not in ("epoch_trace", "alpha_omega")})
                            row = {**key, "status": "ok", **row}
                        except Exception as e:  # noqa: BLE001 — a failed cell is recorded, the grid goes on
                            row = {**key, "status": "failed", "error": f"{type(e).__name__}: {e}",
                                   "traceback": traceback.format_exc(limit=5)}
                        rows.append(row)
                        results.write(json.dumps(row) + "\n")
                        results.flush()
                        print(f"[{len(rows)}] {ds_name}/{model_name}/s{seed}/{fcfg.label()}/{method}: "
                              f"{row['status']}", flush=True)
    results.close()
    return rows


def summary_table(rows: list[dict], cols: tuple[str, ...] = SUMMARY_COLS) -> str:
    """Per regime, methods × metrics: mean ± 95% CI half-width over the ok cells (seeds, models, datasets)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    blocks = []
    for regime in dict.fromkeys(r["regime"] for r in ok):
        lines = [f"regime {regime}".ljust(16) + "".join(c.rjust(16) for c in cols)]
        in_regime = [r for r in ok if r["regime"] == regime]
        for m in dict.fromkeys(r["method"] for r in in_regime):
            cells = []
            for c in cols:
                vals = [float(r[c]) for r in in_regime if r["method"] == m and c in r]
                mean, _, lo, hi = mean_ci(vals) if vals else (float("nan"),) * 4
                half = (hi - lo) / 2 if hi == hi else float("nan")
                cells.append((f"{mean:.4f}" + (f"±{half:.3f}" if half == half and half > 0 else "")).rjust(16))
            lines.append(f"  {m}".ljust(16) + "".join(cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
