"""components.io.store on a local folder and on a real S3-protocol server (moto_server), no mocks."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import pickle
import struct
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import AWS_ENV, free_port, s3_bucket_env

from components.io.store import CorruptObject, Store, is_corrupt
from sragu_core.errors import ConfigError

BUCKET = "sragu-test"


@pytest.fixture(scope="module")
def s3_endpoint(s3_server):
    """The session's moto S3 server with the AWS variables pointing at it and one bucket."""
    with s3_bucket_env(s3_server, BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.service)])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    request.getfixturevalue("s3_endpoint")
    return Store(f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}")


class NotBytes:
    """Data whose conversion to bytes fails while the store is writing it."""

    def __bytes__(self):
        raise RuntimeError("disk gone mid-write")


class Opaque:
    """An arbitrary pickled object: weights_only loading must refuse it."""


# ---- round trips ---------------------------------------------------------------------------------
def test_bytes_json_torch_roundtrip(store):
    store.put_bytes("a/b/raw.bin", b"\x00\x01payload")
    assert store.get_bytes("a/b/raw.bin") == b"\x00\x01payload"
    store.put_bytes("a/b/raw.bin", bytearray(b"second"))  # overwrite replaces
    assert store.get_bytes("a/b/raw.bin") == b"second"

    cfg = {"method": "sragu", "tau": 2.0, "seeds": [0, 1], "nested": {"x": None}}
    store.put_json("configs/run.json", cfg)
    assert store.get_json("configs/run.json") == cfg

    torch.manual_seed(0)
    sd = torch.nn.Linear(3, 2).state_dict()
    store.put_torch("artifacts/originals/ab12.pt", {"state_dict": sd, "epoch": 3})
    back = store.get_torch("artifacts/originals/ab12.pt")
    assert back["epoch"] == 3 and list(back["state_dict"]) == ["weight", "bias"]
    assert all(torch.equal(sd[k], back["state_dict"][k]) for k in sd)


def test_get_torch_refuses_arbitrary_objects(store):
    store.put_torch("bad.pt", {"obj": Opaque()})
    with pytest.raises(pickle.UnpicklingError):
        store.get_torch("bad.pt")


def test_exists_list_delete(store):
    for key in ["cells/b.parquet", "cells/a.parquet", "cells/sub/c.json", "cellsX/d.bin", "top.json"]:
        store.put_bytes(key, b"x")
    assert store.exists("cells/a.parquet") and not store.exists("cells/zz.parquet")
    assert not store.exists("cells")  # a folder is not a key
    assert store.list("cells/") == ["cells/a.parquet", "cells/b.parquet", "cells/sub/c.json"]
    assert store.list("cells") == ["cells/a.parquet", "cells/b.parquet", "cells/sub/c.json", "cellsX/d.bin"]
    assert store.list("nothing/") == []
    everything = ["cells/a.parquet", "cells/b.parquet", "cells/sub/c.json", "cellsX/d.bin", "top.json"]
    assert store.list() == everything
    store.delete("cells/a.parquet")
    store.delete("cells/a.parquet")  # idempotent
    assert not store.exists("cells/a.parquet")
    assert store.list("cells/") == ["cells/b.parquet", "cells/sub/c.json"]
    with pytest.raises(FileNotFoundError, match="cells/a.parquet"):
        store.get_bytes("cells/a.parquet")


def test_bad_keys_are_config_errors(store):
    for key in ["", "../escape.bin", "a//b", "a/./b"]:
        with pytest.raises(ConfigError, match="store key"):
            store.put_bytes(key, b"x")


# ---- Parquet -------------------------------------------------------------------------------------
def test_rows_roundtrip_flattens_nested_values(store):
    rows = [
        {"cell": "c1", "acc": 0.91, "n": 3, "cfg": {"lr": 0.1, "steps": [1, 2]}, "tags": ["a", "b"]},
        {"cell": "c2", "acc": 0.5, "n": 4, "cfg": {"lr": 0.2}, "tags": [], "extra": "only-here"},
    ]
    store.write_rows("cells/c.parquet", rows)
    back = store.read_rows("cells/c.parquet")
    assert [r["cell"] for r in back] == ["c1", "c2"] and [r["n"] for r in back] == [3, 4]
    assert isinstance(back[0]["cfg"], str) and json.loads(back[0]["cfg"]) == {"lr": 0.1, "steps": [1, 2]}
    assert json.loads(back[1]["tags"]) == []
    # a key that only a later row has is still a column (from_pylist alone would drop it)
    assert back[0]["extra"] is None and back[1]["extra"] == "only-here"
    table = store.read_table(["cells/c.parquet"])
    assert all(not pa.types.is_nested(f.type) for f in table.schema)


def test_read_table_unions_columns(store):
    store.write_rows("cells/a.parquet", [{"cell": "a", "acc": 0.9, "n": 1, "note": None}])
    store.write_rows("cells/b.parquet", [{"cell": "b", "acc": 1, "omega": 1.5, "note": "hi"}])
    table = store.read_table(store.list("cells/"))
    assert set(table.column_names) == {"cell", "acc", "n", "omega", "note"}
    rows = {r["cell"]: r for r in table.to_pylist()}
    assert rows["a"]["omega"] is None and rows["b"]["n"] is None
    assert rows["a"]["note"] is None and rows["b"]["note"] == "hi"
    assert table.schema.field("acc").type == pa.float64() and rows["b"]["acc"] == 1.0  # int widened
    assert store.read_table([]).num_rows == 0


def test_a_flipped_bit_in_a_value_is_caught_by_the_page_checksum(store):
    """Cell files carry page checksums and reads verify them: without, the changed value reads back quietly."""
    value = 0.1234567891234
    store.write_rows("cells/v.parquet", [{"cell_key": "v", "acc": value, "note": "hi"}])
    data = bytearray(store.get_bytes("cells/v.parquet"))
    at = data.find(struct.pack("<d", value))  # the first copy: the data page (statistics come after it)
    data[at + 3] ^= 0x10
    store.put_bytes("cells/v.parquet", bytes(data))
    quiet = pq.ParquetFile(pa.BufferReader(bytes(data))).read().column("acc")[0].as_py()
    assert quiet != value  # what an unverified read returns
    with pytest.raises(CorruptObject, match="CRC checksum verification failed") as e:
        store.read_rows("cells/v.parquet")
    assert is_corrupt(e.value)


def test_damaged_parquet_is_content_an_absent_object_is_not(store):
    """pyarrow reports a garbled footer as OSError, which is_corrupt cannot tell from an outage; the store
    fetches the bytes first and decodes them in memory, so the damage comes back as CorruptObject."""
    store.write_rows("cells/d.parquet", [{"cell_key": "d", "acc": 0.5}])
    data = store.get_bytes("cells/d.parquet")
    n = struct.unpack("<i", data[-8:-4])[0]
    store.put_bytes("cells/d.parquet", data[: -8 - n] + b"\xff" * n + data[-8:])
    with pytest.raises(OSError) as raw:
        pq.ParquetFile(pa.BufferReader(store.get_bytes("cells/d.parquet"))).read()
    assert not is_corrupt(raw.value)
    with pytest.raises(CorruptObject, match="OSError.*thrift") as e:
        store.read_table(["cells/d.parquet"])
    assert is_corrupt(e.value)
    with pytest.raises(FileNotFoundError) as gone:
        store.read_rows("cells/none.parquet")
    assert not is_corrupt(gone.value)


# ---- pickling and atomicity ----------------------------------------------------------------------
def test_pickles_as_uri_and_copy_works(store):
    store.put_json("x.json", {"v": 1})
    blob = pickle.dumps(store)
    assert store.__reduce__() == (Store, (store.uri,)) and len(blob) < 300
    copy = pickle.loads(blob)
    assert copy == store and copy is not store
    assert copy.get_json("x.json") == {"v": 1}
    copy.put_json("y.json", {"v": 2})
    assert store.get_json("y.json") == {"v": 2}


def test_failed_write_leaves_nothing(store):
    with pytest.raises(RuntimeError, match="mid-write"):
        store.put_bytes("cells/new.bin", NotBytes())
    assert not store.exists("cells/new.bin") and store.list() == []

    store.put_bytes("cells/old.bin", b"v1")
    with pytest.raises(RuntimeError, match="mid-write"):
        store.put_bytes("cells/old.bin", NotBytes())
    assert store.get_bytes("cells/old.bin") == b"v1"  # not truncated
    with pytest.raises(Exception):  # noqa: B017 - torch's pickling error type varies by version
        store.put_torch("cells/t.pt", {"w": torch.ones(1000), "fn": lambda: 0})
    assert store.list() == ["cells/old.bin"]
    if store.kind == "local":  # no temp file left in the folder
        assert sorted(os.listdir(os.path.join(store.root, "cells"))) == ["old.bin"]


def test_local_listing_hides_in_flight_temp_files(tmp_path):
    store = Store(str(tmp_path))
    store.put_bytes("cells/a.bin", b"x")
    (tmp_path / "cells" / ".b.bin.k3j2.partial").write_bytes(b"half")
    assert store.list("cells/") == ["cells/a.bin"]


# ---- URIs and check() ----------------------------------------------------------------------------
@pytest.mark.parametrize("uri", ["gs://x", "s3://", "s3:///prefix", "s3://b", "s3://bucket/a/../b", "", "hdfs://h/p"])
def test_malformed_uri_is_config_error(uri):
    with pytest.raises(ConfigError, match="store"):
        Store(uri).check()


def test_local_uri_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Store("rel/dir").uri == str(tmp_path / "rel" / "dir")
    assert Store(f"file://{tmp_path}/x").uri == str(tmp_path / "x")
    assert Store("s3://bkt/a/b/").uri == "s3://bkt/a/b"


def test_check_local(tmp_path):
    Store(str(tmp_path / "new" / "root")).check()
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="store.*writable folder"):
        Store(str(tmp_path / "afile" / "sub")).check()


@pytest.mark.service
def test_check_live_bucket(s3_endpoint):
    Store(f"s3://{BUCKET}/some/prefix").check()


@pytest.mark.service
def test_check_missing_bucket(s3_endpoint):
    with pytest.raises(ConfigError, match="store.*no-such-bucket.*does not exist"):
        Store("s3://no-such-bucket/p").check()


@pytest.mark.service
def test_check_closed_port_fails_fast(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="store.*reachable S3 endpoint.*AWS_ENDPOINT_URL") as err:
        Store(f"s3://{BUCKET}").check()
    assert time.monotonic() - start < 10
    assert "\n" not in str(err.value)
