"""How reliable is a layer's α at a given number of eigenvalues?  The measurement behind ``min_evals``.

Command:   python bench/alpha_variance.py [--seeds 6] [--subsample 10,20,30,40,50,64] [--draws 10]
Runtime:   about 4 minutes on the 2-core CPU box here (six mlp and six cnn_small originals on mnist_5k).
Measures:  (1) every Linear/Conv2d layer of the default ``mlp`` and ``cnn_small`` trained with the original's
           recipe on mnist_5k for ``--seeds`` seeds: number of eigenvalues n, mean and std of α across seeds,
           and the largest/smallest α; (2) k-unit layers cut from the trained Linear layers with at least
           2k units (k random rows of W, ``--draws`` draws per seed): the std of α over seeds and draws at
           each k, i.e. how noisy α is for a layer that has only k eigenvalues.  The spread of α over seeds
           of the *same* recipe is estimation noise plus seed noise: a layer whose α moves by more than
           SRAGU's map width (τ = 1.5) between seeds cannot be assigned a stability weight.
Last line: ``std_alpha_at_k=<k>:<std>,... ratio_std_<smallest k>_vs_largest=<std at smallest k / at largest>``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from components.config import BenchmarkConfig  # noqa: E402
from components.execution.compute import load_splits, train_original  # noqa: E402
from sragu_core.spectral import fit_power_law, layer_esd, spectral_layers  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--subsample", default="10,20,30,40,50,64")
    ap.add_argument("--draws", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ks = [int(k) for k in args.subsample.split(",")]
    bench = BenchmarkConfig()
    ds = load_splits("mnist_5k", bench)
    per_layer: dict[tuple[str, str], list[tuple[int, float]]] = {}
    per_k: dict[int, dict[tuple[str, str], list[float]]] = {k: {} for k in ks}
    for model_name in ("mlp", "cnn_small"):
        for seed in range(args.seeds):
            model, _, _ = train_original(ds, model_name, bench, seed=seed, device=torch.device("cpu"))
            for name, module in spectral_layers(model):
                evals = layer_esd(module.weight)
                evals = evals[evals > 1e-5]
                alpha = fit_power_law(evals)[0]
                per_layer.setdefault((model_name, name), []).append((len(evals), alpha))
                w = module.weight.detach()
                for k in ks:
                    if w.ndim == 2 and min(w.shape) >= 2 * k:  # Linear layers with clearly more than k units
                        for draw in range(args.draws):  # k random output units: a k-unit layer of this one
                            gen = torch.Generator().manual_seed(1000 * seed + draw)
                            rows = torch.randperm(w.shape[0], generator=gen)[:k]
                            sub = layer_esd(w[rows])
                            sub = sub[sub > 1e-5]
                            per_k[k].setdefault((model_name, name), []).append(fit_power_law(sub)[0])
    print(f"{'model':10} {'layer':6} {'n_evals':>7} {'alpha_mean':>10} {'alpha_std':>9} {'min':>6} {'max':>6}")
    for (m, name), vals in per_layer.items():
        a = [v for _, v in vals]
        print(f"{m:10} {name:6} {vals[0][0]:7d} {statistics.mean(a):10.2f} {statistics.stdev(a):9.2f} "
              f"{min(a):6.2f} {max(a):6.2f}")
    summary = []
    print("k-unit layers cut from trained Linear layers: std of alpha over seeds x draws, mean over layers")
    for k in ks:
        stds = [statistics.stdev(v) for v in per_k[k].values() if len(v) >= 2]
        if stds:
            s = statistics.mean(stds)
            summary.append((k, s))
            print(f"k={k:4d}  layers={len(stds)}  mean_std_alpha={s:.2f}")
    line = ",".join(f"{k}:{s:.2f}" for k, s in summary)
    print(f"std_alpha_at_k={line} ratio_std_{summary[0][0]}_vs_largest={summary[0][1] / summary[-1][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
