"""components.io.datasets: IDX/CIFAR readers on hand-written files, splits, offline sets, errors, downloads."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gzip
import hashlib
import pickle
import tarfile

import numpy as np
import pytest
import torch

from components.io import datasets as ds
from sragu_core.errors import ConfigError

N_TRAIN, N_TEST = 40, 10


def idx_bytes(arr: np.ndarray, type_byte: int) -> bytes:
    """IDX encoding written from the format description, independent of the reader under test."""
    header = bytes([0, 0, type_byte, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def unique_images(n: int, shape: tuple[int, ...], start: int) -> np.ndarray:
    """uint8 images whose first two pixels encode their index, so rows can be traced through a split."""
    x = np.random.default_rng(start).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, 0], flat[:, 1] = (start + np.arange(n)) // 256, (start + np.arange(n)) % 256
    return x


def write_mnist(folder, gz: bool = True):
    """Tiny MNIST-layout folder; returns (train images, train labels, test images, test labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (unique_images(N_TRAIN, (28, 28), 0), np.arange(N_TRAIN, dtype=np.uint8) % 10,
              unique_images(N_TEST, (28, 28), 1000), np.arange(N_TEST, dtype=np.uint8) % 10)
    for name, arr, t in zip(ds.IDX_FILES, arrays, (8, 8, 8, 8)):
        data = idx_bytes(arr, t)
        if gz:
            (folder / name).write_bytes(gzip.compress(data))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(data)
    return arrays


def write_cifar10(folder, per_batch: int = 4):
    """Tiny CIFAR-10 batch folder (protocol-2 pickles, like the originals); returns train and test arrays."""
    sub = folder / "cifar-10-batches-py"
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for i, f in enumerate(ds.CIFAR10_FILES):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [(i + j) % 10 for j in range(per_batch)]
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": b"x"}, fh, protocol=2)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1]), xs[-1], np.array(ys[-1])


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype,type_byte", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                             (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
def test_read_idx_roundtrip(tmp_path, gz, dtype, type_byte):
    scale = {np.uint8: 8, np.int8: 4, np.int16: 1000, np.int32: 10**7, np.float32: 0.37, np.float64: 1e-3}
    scale = scale[dtype]
    base = np.arange(2 * 3 * 5) - (0 if dtype == np.uint8 else 7)  # negatives for signed types
    arr = (base * scale).astype(dtype).reshape(2, 3, 5)  # multi-byte values catch a wrong byte order
    data = idx_bytes(arr, type_byte)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    out = ds.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_rejects_truncated_and_bad_magic(tmp_path):
    good = idx_bytes(np.zeros((3, 4), np.uint8), 0x08)
    (tmp_path / "t").write_bytes(good[:-1])
    (tmp_path / "m").write_bytes(b"\x01" + good[1:])
    for name in "tm":
        with pytest.raises(ConfigError, match="path"):
            ds.read_idx(tmp_path / name)


def test_read_cifar_pickle_exact(tmp_path):
    x, y, _, _ = write_cifar10(tmp_path)
    xb, yb = ds.read_cifar_pickle(tmp_path / ds.CIFAR10_FILES[0])
    assert xb.shape == (4, 3, 32, 32) and xb.dtype == np.uint8 and yb.dtype == np.int64
    np.testing.assert_array_equal(xb.reshape(4, -1), x[:4])  # channel-major: reshape is exact
    np.testing.assert_array_equal(yb, y[:4])
    fine = tmp_path / "c100"
    fine.write_bytes(pickle.dumps({b"data": x[:2], b"fine_labels": [97, 3], b"coarse_labels": [1, 2]}))
    np.testing.assert_array_equal(ds.read_cifar_pickle(fine)[1], [97, 3])


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_read_cifar_pickle_refuses_code(tmp_path):
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ConfigError, match="posix.getcwd|nt.getcwd"):
        ds.read_cifar_pickle(tmp_path / "evil")


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_idx(tmp_path, gz):
    _xtr, ytr, xte, yte = write_mnist(tmp_path / "mnist", gz=gz)
    d = ds.load_dataset("mnist", seed=0, data_dir=tmp_path, val_fraction=0.25)
    assert (len(d.train), len(d.val), len(d.test)) == (30, 10, N_TEST) and d.num_classes == 10
    assert d.input_shape == (1, 28, 28)
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.int64
    assert 0.0 <= float(d.train.x.min()) and float(d.train.x.max()) <= 1.0
    np.testing.assert_allclose(d.test.x.numpy()[:, 0] * 255, xte, atol=1e-4)  # official test kept, in order
    np.testing.assert_array_equal(d.test.y.numpy(), yte)
    # train + val are exactly the official train rows, disjoint, each with its own label
    ids = [tuple(np.rint(s.x.numpy()[:, 0, 0, :2] * 255).astype(int).T) for s in (d.train, d.val)]
    rows = [a * 256 + b for a, b in ids]
    assert sorted(np.concatenate(rows)) == list(range(N_TRAIN))
    for s, r in zip((d.train, d.val), rows):
        np.testing.assert_array_equal(s.y.numpy(), ytr[r])


def test_load_cifar10_from_batches(tmp_path):
    _xtr, ytr, xte, yte = write_cifar10(tmp_path / "cifar10")
    d = ds.load_dataset("cifar10", seed=3, data_dir=tmp_path, val_fraction=0.25)
    assert (len(d.train), len(d.val), len(d.test)) == (15, 5, 4) and d.input_shape == (3, 32, 32)
    assert d.train.x.dtype == torch.float32 and 0.0 <= float(d.train.x.min()) <= float(d.train.x.max()) <= 1.0
    np.testing.assert_allclose(d.test.x.numpy().reshape(4, -1) * 255, xte, atol=1e-4)
    np.testing.assert_array_equal(d.test.y.numpy(), yte)
    assert sorted(np.concatenate([d.train.y.numpy(), d.val.y.numpy()])) == sorted(ytr)


def test_fashion_found_in_system_folder(tmp_path, monkeypatch):
    share = tmp_path / "share"
    write_mnist(share / "dataset-fashion-mnist" / "data" / "fashion")
    monkeypatch.setattr(ds, "FASHION_SEARCH_ROOTS", (share,))
    d = ds.load_dataset("fashion_mnist", seed=0, data_dir=tmp_path / "empty")
    assert len(d.test) == N_TEST and len(d.train) + len(d.val) == N_TRAIN


@pytest.mark.parametrize("name,n,shape", [("mnist_5k", 5000, (1, 28, 28)), ("digits", 1797, (1, 8, 8))])
def test_offline_sets(name, n, shape):
    a, b, c = (ds.load_dataset(name, seed=s) for s in (0, 0, 1))
    assert a.input_shape == shape and a.num_classes == 10
    sizes = (len(a.train), len(a.val), len(a.test))
    assert sum(sizes) == n and sizes[2] == round(0.2 * n) and sizes[1] == round(0.1 * n)
    for s in (a.train, a.val, a.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert 0.0 <= float(s.x.min()) and float(s.x.max()) == pytest.approx(1.0)
        assert set(s.y.tolist()) == set(range(10))
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part).x, getattr(b, part).x)  # same seed, same split
    assert not torch.equal(a.test.x, c.test.x)  # another seed, another split


def test_offline_split_disjoint_and_covering():
    d = ds.load_dataset("mnist_5k", seed=7, val_fraction=0.15, test_fraction=0.25)
    keys = [{r.numpy().tobytes() for r in s.x.reshape(len(s), -1)} for s in (d.train, d.val, d.test)]
    assert sum(map(len, keys)) == len(set().union(*keys)) == 5000  # the 5,000 images are distinct
    assert (len(d.val), len(d.test)) == (750, 1250)


@pytest.mark.parametrize("kwargs,field,value", [
    ({"name": "imagenet"}, "dataset", "imagenet"),
    ({"name": "digits", "val_fraction": 0.0}, "val_fraction", 0.0),
    ({"name": "digits", "val_fraction": 1.5}, "val_fraction", 1.5),
    ({"name": "digits", "test_fraction": -0.1}, "test_fraction", -0.1),
    ({"name": "digits", "val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction", 1.0),
    ({"name": "mnist", "test_fraction": 0.2}, "test_fraction", 0.2),
    ({"name": "digits", "seed": -1}, "seed", -1),
])
def test_bad_input_is_one_clear_error(kwargs, field, value):
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(ConfigError) as e:
        ds.load_dataset(kwargs.pop("name"), **kwargs)
    assert e.value.field == field and f"{field}={value!r}" in str(e.value)
    if field == "dataset":
        assert "mnist_5k" in str(e.value) and "cifar100" in str(e.value)


@pytest.mark.parametrize("name,expect", [("mnist", "train-images-idx3-ubyte.gz"),
                                         ("cifar10", "cifar-10-batches-py/test_batch"),
                                         ("cifar100", "cifar-100-python/train")])
def test_missing_files_name_folder_and_files(tmp_path, monkeypatch, name, expect):
    monkeypatch.setenv("SRAGU_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="data_dir") as e:
        ds.load_dataset(name, seed=0)
    assert str(tmp_path / "nowhere" / name) in str(e.value) and expect in str(e.value)
    assert "download=True" in str(e.value)


def _serve(monkeypatch, name, folder, md5):
    monkeypatch.setitem(ds.URLS, name, folder.as_uri() + "/")
    monkeypatch.setitem(ds.MD5, name, md5)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_mnist(src)
    _serve(monkeypatch, "mnist", src, dict(ds.MD5["mnist"]))  # the real MNIST md5s: the fakes fail them
    with pytest.raises(ConfigError, match="md5") as e:
        ds.load_dataset("mnist", seed=0, data_dir=tmp_path / "dst", download=True)
    assert e.value.field == "download" and "train-images" in str(e.value)
    assert list((tmp_path / "dst" / "mnist").iterdir()) == []


def test_download_verified_mnist_and_cifar(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_mnist(src)
    md5 = {f: hashlib.md5((src / f).read_bytes()).hexdigest() for f in ds.IDX_FILES}
    _serve(monkeypatch, "mnist", src, md5)
    assert len(ds.load_dataset("mnist", seed=0, data_dir=tmp_path / "dst", download=True).test) == N_TEST

    write_cifar10(tmp_path / "c")
    tarball = src / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "c" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _serve(monkeypatch, "cifar10", src, {tarball.name: hashlib.md5(tarball.read_bytes()).hexdigest()})
    d = ds.load_dataset("cifar10", seed=0, data_dir=tmp_path / "dst", download=True)
    assert len(d.test) == 4 and d.input_shape == (3, 32, 32)
    assert not list((tmp_path / "dst" / "cifar10").glob(".*"))  # no temp files or folders left


def test_registry_lists_every_loader():
    assert ds.DATASETS == ("mnist_5k", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100")
