"""Cell claims (components/io/leases.py) and the store primitives under them: exclusive create, quarantine,
verified cell reads — on a local folder and on a real S3-protocol server (moto)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import boto3
import pyarrow.parquet as pq
import pytest
from conftest import AWS_ENV

from components.execution.benchmark_run import verified_cells
from components.execution.tasks import cached, cell_path
from components.io.consolidate import consolidate_cells
from components.io.leases import Leases, driver_identity
from components.io.store import CorruptObject, Store, is_corrupt


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_server")
    for k, v in {"AWS_ENDPOINT_URL": endpoint, **AWS_ENV}.items():
        monkeypatch.setenv(k, v)
    bucket = f"leases-{tmp_path.name[-8:].lower().replace('_', '-')}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return Store(f"s3://{bucket}/p")


def test_create_writes_only_when_absent(store):
    assert store.create("leases/cells/a.json", b"first")
    assert not store.create("leases/cells/a.json", b"second")
    assert store.get_bytes("leases/cells/a.json") == b"first"
    assert store.list("leases/") == ["leases/cells/a.json"]  # no temp file left behind


def test_only_one_of_two_drivers_gets_a_claim_and_a_dead_drivers_claim_is_taken_over(store):
    with Leases(store, ttl_s=60) as a, Leases(store, ttl_s=60) as b:
        assert a.claim("k1") and not b.claim("k1")
        assert b.owner("k1") == a.id and a.alive(a.id) and b.alive(a.id)
        a.release("k1")
        assert b.claim("k1") and a.owner("k1") == b.id
    # a driver of this host whose process is gone: its claim is free at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ghost = {**driver_identity(), "pid": int(dead.stdout), "id": "ghost"}
    store.put_json("leases/drivers/ghost.json", {**ghost, "time": time.time()})
    store.put_bytes("leases/cells/k2.json", json.dumps({"driver": "ghost"}).encode())
    with Leases(store, ttl_s=60) as c:
        assert not c.alive("ghost") and c.owner("k2") is None and c.claim("k2")
    # a driver elsewhere is alive while its heartbeat is younger than the TTL
    remote = {"id": "far", "host": "another-host", "pid": 1, "started": 0.0}
    store.put_json("leases/drivers/far.json", {**remote, "time": time.time()})
    store.put_bytes("leases/cells/k3.json", json.dumps({"driver": "far"}).encode())
    with Leases(store, ttl_s=60) as d:
        assert d.alive("far") and not d.claim("k3")
    store.put_json("leases/drivers/far.json", {**remote, "time": time.time() - 61})
    with Leases(store, ttl_s=60) as e:
        assert not e.alive("far") and e.claim("k3")


def test_claims_in_parallel_split_a_grid_between_two_drivers_and_background_releases_finish_on_exit(store):
    keys = [f"k{i:03d}" for i in range(60)]  # enough to go through the thread pool
    with Leases(store, ttl_s=60) as a, Leases(store, ttl_s=60) as b:
        first = a.claim_many(keys[:40], threads=8)
        second = b.claim_many(keys, threads=8)  # a holds the first 40: b gets exactly the other 20
        assert first == keys[:40] and second == keys[40:]
        assert a.held == frozenset(keys[:40]) and b.held == frozenset(keys[40:])
        released, real = [], a.release

        def spy(key):  # which thread released what
            released.append((key, threading.current_thread().name))
            real(key)

        a.release = spy
        for k in first:
            a.release_later(k)
    # leaving a's context waited for its background releases: all 40, each off the caller's thread
    assert sorted(k for k, _ in released) == keys[:40]
    assert all(name.startswith("sragu-release") for _, name in released)
    assert store.list("leases/cells/") == []


def test_a_driver_releases_its_claims_and_heartbeat_on_exit(store):
    with Leases(store, ttl_s=60) as a:
        a.claim("x")
        a.claim("y")
        assert len(store.list("leases/cells/")) == 2 and store.exists(f"leases/drivers/{a.id}.json")
    assert store.list("leases/") == []


def test_heartbeat_is_renewed(tmp_path):
    store = Store(str(tmp_path))
    with Leases(store, ttl_s=0.4) as a:  # beats every 0.1 s
        t1 = store.get_json(f"leases/drivers/{a.id}.json")["time"]
        time.sleep(0.35)
        assert store.get_json(f"leases/drivers/{a.id}.json")["time"] > t1


def test_corrupt_objects_are_quarantined_and_recomputed_never_trusted(store):
    store.put_bytes("artifacts/x.json", b"{not json")
    loads = []

    def load(k):
        loads.append(k)
        return store.get_json(k)

    assert cached(store, "artifacts/x.json", load, lambda o: None) is None  # unreadable → recompute
    assert not store.exists("artifacts/x.json")
    [rec] = store.quarantined_since(0)
    assert rec["key"] == "artifacts/x.json" and "JSONDecodeError" in rec["reason"]
    assert store.get_bytes(rec["moved_to"]) == b"{not json"
    # a readable object that is not what its key promises is refused the same way
    store.put_json("artifacts/y.json", {"key": "other"})

    def verify(o):
        if o["key"] != "y":
            raise CorruptObject("wrong key")

    assert cached(store, "artifacts/y.json", store.get_json, verify) is None
    assert len(store.quarantined_since(0)) == 2
    # an unreachable store is not corruption: the error surfaces and the object stays
    assert not is_corrupt(OSError("AWS Error NETWORK_CONNECTION")) and is_corrupt(CorruptObject("x"))


class _Cell:
    def __init__(self, key):
        self.key = key


def test_verified_cells_refuse_a_file_holding_another_cells_row(tmp_path):
    store = Store(str(tmp_path))
    store.write_rows(cell_path("a"), [{"cell_key": "a", "status": "ok", "v": 1.0}])
    store.write_rows(cell_path("b"), [{"cell_key": "a", "status": "ok", "v": 1.0}])  # a's row under b's key
    store.put_bytes(cell_path("c"), b"PAR1 truncated")
    cells = [_Cell(k) for k in "abcd"]
    done = verified_cells(store, cells)
    assert sorted(done) == ["a"]
    assert sorted(r["key"] for r in store.quarantined_since(0)) == [cell_path("b"), cell_path("c")]
    res = consolidate_cells(store, [c.key for c in cells], [{"cell_key": "d", "status": "failed", "error": "x"}],
                            tmp_path / "t.parquet", path_of=cell_path)
    assert pq.read_table(tmp_path / "t.parquet").column("cell_key").to_pylist() == ["a", "d"]
    assert res.missing == ["b", "c"]


def test_driver_identity_is_this_process():
    me, other = driver_identity(), driver_identity()
    assert me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    assert me["id"].startswith(f"{me['host']}-{os.getpid()}-") and me["id"] != other["id"]
