"""Native per-layer α (``sragu_core.spectral.layer_alphas``) against ``weightwatcher``'s ``analyze()``.

Command:   python bench/spectral.py [--repeats 3] [--profile]
Runtime:   about 25 s on the 2-core CPU box here with --repeats 3 (resnet18 dominates: 1-2 s per call
           on each side); about 60 s with --profile.
Measures:  for freshly initialised mlp (1x28x28), cnn_small and resnet18 (3x32x32, 10 classes), the
           wall time of one full α table by each implementation, side by side in one process, both
           single-threaded (OMP_NUM_THREADS=1, torch.set_num_threads(1)) so neither gets more cores.
           One warm-up call of each, then the median of --repeats calls.  Also the largest |Δα| over
           layers both fit with the ordinary estimator (our status "ok"; weightwatcher uses a
           different small-N estimator below 20 eigenvalues).  The weightwatcher time includes
           constructing ``WeightWatcher(model=m)``, as a caller would.
           --profile splits the native resnet18 time into the ESD (batched Gram-matrix eigvalsh, float64
           and float32) and the pruned x_min/KS scan (at several ``chunk_elems``), beside
           weightwatcher's own scan loop, to show where the time goes.  On a CPU both sides spend most
           of their time in the same dense LAPACK eigen/singular-value solves, which bounds the ratio.
Last line: ``speedup_vs_weightwatcher=<resnet18 ratio> max_abs_dalpha=<largest |Δα| over all models>``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy/torch load their BLAS: same single core for both sides

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sragu_core.models import ModelConfig, build_model  # noqa: E402
from sragu_core.spectral import fit_power_law, layer_alphas, layer_esd, spectral_layers  # noqa: E402

MODELS = (("mlp", (1, 28, 28)), ("cnn_small", (3, 32, 32)), ("resnet18", (3, 32, 32)))


def _quiet_weightwatcher():
    """Import weightwatcher with its import-time warnings and per-layer prints silenced."""
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import weightwatcher
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return weightwatcher


def _ww_analyze(ww, model):
    with contextlib.redirect_stdout(io.StringIO()):
        return ww.WeightWatcher(model=model).analyze()


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations, LAPACK workspace queries, lazy imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _max_dalpha(rows, df) -> tuple[float, int]:
    """Largest |Δα| over our status-ok layers, and how many there were."""
    assert len(rows) == len(df), f"{len(rows)} native layers vs {len(df)} weightwatcher rows"
    ok = [(r.alpha, float(a)) for r, a in zip(rows, df["alpha"]) if r.status == "ok"]
    return max(abs(a - b) for a, b in ok), len(ok)


def _profile(model, repeats: int) -> None:
    """Where native resnet18 time goes: eigenvalues (ESD) vs the x_min/KS scan (and weightwatcher's scan)."""
    from weightwatcher.WW_powerlaw import WWFit

    weights = [m.weight for _, m in spectral_layers(model)]
    esds = [lam[lam > 1e-5] for lam in (layer_esd(w) for w in weights)]
    sizes = sorted(lam.numel() for lam in esds)
    print(f"\nprofile resnet18: {len(esds)} layers, eigenvalues per layer {sizes[0]}..{sizes[-1]}, "
          f"Σn²={sum(n * n for n in sizes) / 1e6:.0f}M KS cells")
    t_all = _median_time(lambda: layer_alphas(model), repeats)
    t_all32 = _median_time(lambda: layer_alphas(model, dtype=torch.float32), repeats)
    t_esd64 = _median_time(lambda: [layer_esd(w) for w in weights], repeats)
    t_esd32 = _median_time(lambda: [layer_esd(w, dtype=torch.float32) for w in weights], repeats)
    rows = [("layer_alphas float64 (default)", t_all), ("layer_alphas dtype=float32 (|dα| ~4e-3)", t_all32),
            ("ESD Gram eigvalsh float64", t_esd64), ("ESD Gram eigvalsh float32", t_esd32)]
    for chunk in (1 << 22, 1 << 19, 1 << 17, 1 << 15):
        t_fit = _median_time(lambda c=chunk: [fit_power_law(lam, chunk_elems=c) for lam in esds], repeats)
        default = " (default)" if chunk == 1 << 17 else ""
        rows.append((f"KS scan chunk_elems=2^{chunk.bit_length() - 1}{default}", t_fit))
    ordinary = [lam.numpy() for lam in esds if lam.numel() >= 20]  # WWFit's small-N branch prints
    rows.append((f"weightwatcher WWFit loop ({len(ordinary)} layers)",
                 _median_time(lambda: [WWFit(lam) for lam in ordinary], repeats)))
    for label, seconds in rows:
        print(f"  {label:38s} {seconds:7.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side after one warm-up")
    parser.add_argument("--profile", action="store_true", help="also split native resnet18 time")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected an integer >= 1")

    torch.set_num_threads(1)
    ww = _quiet_weightwatcher()
    print(f"torch {torch.__version__}, weightwatcher {ww.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} after 1 warm-up")
    print(f"{'model':10s} {'layers':>6s} {'ok':>4s} {'native s':>9s} {'ww s':>8s} {'speedup':>8s} "
          f"{'max|Δα|':>9s}")
    speedups, dalphas, resnet = {}, [], None
    for name, shape in MODELS:
        model = build_model(ModelConfig(name), shape, 10, seed=0)
        t_native = _median_time(lambda m=model: layer_alphas(m), args.repeats)
        t_ww = _median_time(lambda m=model: _ww_analyze(ww, m), args.repeats)
        dalpha, n_ok = _max_dalpha(layer_alphas(model), _ww_analyze(ww, model))
        speedups[name] = t_ww / t_native
        dalphas.append(dalpha)
        if name == "resnet18":
            resnet = model
        print(f"{name:10s} {len(spectral_layers(model)):6d} {n_ok:4d} {t_native:9.3f} {t_ww:8.3f} "
              f"{speedups[name]:7.2f}x {dalpha:9.2e}")
    if args.profile:
        _profile(resnet, args.repeats)
    print(f"speedup_vs_weightwatcher={speedups['resnet18']:.1f} max_abs_dalpha={max(dalphas):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
