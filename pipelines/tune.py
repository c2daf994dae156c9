"""Tune unlearning hyperparameters with Ray Tune, then hand the result to the benchmark (docs/tuning.md).

    python pipelines/tune.py --preset smoke --tune trials=8
    python pipelines/tune.py --preset default --tune trials=24                       # protocol shared
    python pipelines/tune.py --preset default --tune protocol=ablation --tune methods=[sragu,agu_layerwise]
    python pipelines/benchmark.py --preset default --tuned runs/tuned-default.json   # held-out seeds only

``--tune protocol=shared`` (default): every method searches only the knobs methods share (step size and
epoch budget, one range per role); ``ablation``: every declared knob, a method's own too (SRAGU's ω knobs
against agu_layerwise's free per-layer steps, equal extra budget).  Every method gets the same number of
trials (Optuna TPE, first trial = its default config, ASHA early stopping per finished cell) on the tuning
seed's cached originals, forget sets and golds.  ``--resume`` continues an interrupted sweep once its state
files match the digests recorded when it stopped; ``--fresh`` starts over.  Writes
``<out>/tuned-<preset>.json`` (``tuned-<preset>-ablation.json`` for the ablation); MLflow gets a parent run
per sweep and a child per trial.  Bad settings or search spaces are one ``error:`` line and exit code 2
before Ray starts.  Under ``ray job submit --working-dir``, ``--out`` must be absolute and ``--store`` absolute or
``s3://`` (the driver runs in Ray's temporary copy of the working dir).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.cli import (  # noqa: E402  (first: sets thread defaults; standard library only)
    DEFAULT_PRESET,
    ArgumentParser,
    check_job_paths,
    out_folder,
    preset_note,
    run_cli,
)
from components.listing import TUNE_LISTINGS, listing, preset_names  # noqa: E402  (standard library only)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, parsed before torch, Ray or MLflow load (``--help`` answers in a fraction of a second)."""
    ap = ArgumentParser(__doc__, "discover:\n  --list methods|regimes|metrics|presets|keys|tune   what --preset, "
                        "--set and --tune take")
    ap.add_argument("--preset", default=None, help=f"the benchmark setting to tune on: one of "
                    f"{', '.join(preset_names()) or '--list presets'} (default: {DEFAULT_PRESET})")
    ap.add_argument("--smoke", action="store_true", help="tune on the preset's smoke variant")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="benchmark override, as in pipelines/benchmark.py (e.g. regimes=[random:0.1])")
    ap.add_argument("--tune", dest="tune", action="append", default=[], metavar="KEY=VALUE",
                    help="sweep setting: protocol (shared|ablation), methods, trials, tuning_seed, objective "
                         "(js|tv|pd|avg_gap; kl_to_gold is unbounded), penalty, drop_tolerance, penalty_split, "
                         "max_concurrent, trial.num_cpus, trial.num_gpus, grace_period (cells), ... (--list tune)")
    ap.add_argument("--space", action="append", default=[], metavar="METHOD.FIELD=RANGE",
                    help="override a searched range: lo:hi, log:lo:hi, int:lo:hi or a,b,c; lo:hi on a vector "
                         "field narrows every entry; under protocol shared only the shared knobs")
    ap.add_argument("--out", default="runs", help="local folder for the tuned file and the default MLflow db "
                    "(absolute under ray job submit)")
    ap.add_argument("--store", default=None, help="artifact store (default: <out>/store); Tune results go to "
                                                  "<store>/tune")
    ap.add_argument("--resume", action="store_true", help="continue interrupted sweeps, after checking their state "
                    "files against the digests recorded in <out>/tune-state when they stopped")
    ap.add_argument("--fresh", action="store_true", help="start the sweeps over, ignoring earlier state")
    ap.add_argument("--list", choices=TUNE_LISTINGS, default=None, help="print what the registries hold and exit")
    return ap.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    from components.config import parse_overrides
    from components.presets import resolve

    preset = args.preset or DEFAULT_PRESET
    if args.list:
        print(listing(args.list, preset=preset, smoke=args.smoke, overrides=parse_overrides(args.overrides)))
        return 0
    check_job_paths(args.out, args.store)
    from components.execution.preflight import preflight
    from components.execution.search_space import parse_space_override, search_space
    from components.execution.tune_run import SweepInterrupted, TuneSettings, for_preset, run_sweeps
    from components.execution.tune_state import resumable
    from sragu_core.config import override
    from sragu_core.errors import ConfigError

    out = out_folder(args.out)
    resolved = resolve(preset, parse_overrides(args.overrides), smoke=args.smoke)
    settings = for_preset(override(TuneSettings(), parse_overrides(args.tune, "--tune"), prefix="tune"),
                          resolved.bench.methods)
    spaces: dict[str, dict] = {}
    for key, text in parse_overrides(args.space, "--space").items():
        method, name, spec = parse_space_override(key, text)
        if method not in settings.methods:  # a range nobody searches would be silently ignored
            raise ConfigError("--space", key, f"a field of a tuned method (tune.methods={list(settings.methods)})")
        spaces.setdefault(method, {})[name] = spec
    for m in settings.methods:
        search_space(m, spaces.get(m), protocol=settings.protocol)
    prepared = preflight(resolved, store_uri=args.store or str(out / "store"), out=out,
                         experiment=f"sragu-tune-{resolved.bench.name}")
    b = resolved.bench
    per_trial = len(b.datasets) * len(b.models) * len(b.regimes)  # one seed, one method
    if note := preset_note(args.preset, f"{len(settings.methods)} methods × {settings.trials} trials of {per_trial} "
                                        "cells each"):
        print(note, flush=True)
    suffix = "" if settings.protocol == "shared" else f"-{settings.protocol}"  # an ablation never replaces
    path = out / f"tuned-{resolved.bench.name}{suffix}.json"                   # the shared sweep's file or state
    name = f"tune-{resolved.bench.name}-s{settings.tuning_seed}{suffix}"
    state_dir = out / "tune-state"
    restore = resumable(prepared.store, [f"{name}-{m}" for m in settings.methods], state_dir, resume=args.resume,
                        fresh=args.fresh)  # before Ray starts, and before anything is unpickled
    try:
        run_sweeps(resolved, settings, prepared.store, prepared.datasets, prepared.tracker, name=name,
                   space_overrides=spaces, out=path, state_dir=state_dir, restore=restore)
    except SweepInterrupted as e:
        print(f"interrupted: {e}", flush=True)
        return 130
    print(f"tuned configs: {path}\nnext: python pipelines/benchmark.py --preset {preset} "
          f"{'--smoke ' if args.smoke else ''}--tuned {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
