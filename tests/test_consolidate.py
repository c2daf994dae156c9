"""components.io.consolidate: the streaming table equals the one-shot permissive concatenation, bad files
are reported, and the output is complete or absent — on a local folder and on a real S3-protocol server."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import hashlib
import random
import struct
import uuid
import weakref

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import s3_bucket_env

import components.io.consolidate as consolidate
from components.execution.tasks import cell_path, read_cell
from components.io.consolidate import ConsolidateResult, consolidate_cells, verify_cells
from components.io.store import CorruptObject, Store, is_corrupt, rows_table

BUCKET = "sragu-consolidate"


# ---- helpers -------------------------------------------------------------------------------------
def key_of(i: int) -> str:
    """Plan order is not key order: a listing's sorted order must not leak into the table."""
    return hashlib.sha1(f"cell-{i}".encode()).hexdigest()[:20]


def cell_row(i: int) -> dict:
    """A finished cell's row, with the column variety a real grid has across methods and regimes."""
    row = {"dataset": "cifar10", "model": "mlp", "seed": i % 3, "method": ("ga", "sragu", "scrub")[i % 3],
           "cell_key": key_of(i), "status": "ok", "forget_acc": 0.5 + i * 1e-4, "test_acc": 0.8 - i * 1e-5}
    if i % 7 == 0:  # sequential cells carry per-step columns the others lack
        row["seq_t1_avg_gap"] = i * 0.01
        row["seq_t2_avg_gap"] = None if i % 14 == 0 else i * 0.02
    row["mia_auc"] = None if i < 1500 else 0.5 + (i % 100) / 1000  # all-null in the first chunk, double later
    row["steps"] = i * 1.5 if i % 11 == 0 else i  # int64 in most files, double in some
    row["tuned_seed"] = 0 if i % 13 == 0 else None  # null in most files, int64 in some
    row["layer_multipliers"] = {"fc1": 1.0, "fc2": i % 5} if i % 2 else ""  # JSON text or a plain string
    if i % 1000 == 999:  # a column first seen late: its place in the column order is where it first appears
        row["late_metric"] = float(i)
    return row


def failed_row(i: int, error: str = "boom") -> dict:
    return {"dataset": "cifar10", "model": "mlp", "seed": i % 3, "method": "ga", "cell_key": key_of(i),
            "status": "failed", "error": error, "trace": {"step": i}}


def write_cells(store: Store, rows: list[dict]) -> None:
    for row in rows:
        store.write_rows(cell_path(row["cell_key"]), [row])


def naive(store: Store, keys: list[str], failed: list[dict]) -> pa.Table:
    """What the driver computed in memory: the verified cells in key order (read with the driver's own
    ``read_cell``, which skips a damaged file as corrupt), then the failed rows without a file, concatenated in
    one go."""
    present = set(store.list("cells/"))
    tables = []
    for k in keys:
        if cell_path(k) in present:
            try:
                tables.append(read_cell(store, k))
            except Exception as e:
                if not is_corrupt(e):
                    raise
    done = {t.column("cell_key")[0].as_py() for t in tables}
    fails = [r for r in failed if r["cell_key"] not in done]
    if fails:
        tables.append(rows_table(fails))
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks() if tables else pa.table({})


def assert_same(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.names == want.schema.names
    assert got.schema.types == want.schema.types
    assert got.combine_chunks().equals(want), "values differ"


def garbled_footer(data: bytes) -> bytes:
    """The Parquet footer overwritten with 0xff: pyarrow reports it as OSError, not ArrowInvalid."""
    n = struct.unpack("<i", data[-8:-4])[0]
    return data[: -8 - n] + b"\xff" * n + data[-8:]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """10,000 cell files in a local store (plus 40 failed rows for cells without a file)."""
    store = Store(str(tmp_path_factory.mktemp("big") / "store"))
    rows = [cell_row(i) for i in range(10_000)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)  # same bytes, a third of the time: durability is not tested here
        write_cells(store, rows)
    keys = [r["cell_key"] for r in rows] + [key_of(i) for i in range(10_000, 10_040)]
    failed = [failed_row(i) for i in range(10_000, 10_040)]
    return store, keys, failed


# ---- equality with the one-shot concatenation ----------------------------------------------------
@pytest.mark.slow
def test_ten_thousand_cells_equal_the_one_shot_concatenation(big, tmp_path):
    store, keys, failed = big
    out = tmp_path / "results.parquet"
    res = consolidate_cells(store, keys, failed, out, path_of=cell_path, chunk=1000)
    want = naive(store, keys, failed)
    got = pq.read_table(out)
    assert_same(got, want)
    assert res == ConsolidateResult(rows=10_040, missing=[], corrupt={}, columns=want.column_names)
    # the variety really crossed chunk boundaries: types were widened across parts, not within one
    types = dict(zip(got.schema.names, got.schema.types))
    assert types["mia_auc"] == pa.float64() and got.column("mia_auc").slice(0, 1000).null_count == 1000
    assert types["steps"] == pa.float64() and types["tuned_seed"] == pa.int64()
    assert types["seq_t1_avg_gap"] == pa.float64() and types["layer_multipliers"] == pa.string()
    assert got.column_names.index("late_metric") < got.column_names.index("error")  # failed rows' columns last
    assert got.column("cell_key").to_pylist() == keys  # plan order, then failed rows


@pytest.mark.slow
def test_at_most_one_chunk_of_cell_tables_is_alive(big, tmp_path, monkeypatch):
    """A consolidation that keeps every cell's table (or every chunk) to the end fails this.  Memory is read
    from Arrow's own allocator (exact, deterministic with one thread), never from RSS."""
    store, keys, _ = big
    real_decode, real_part = consolidate._decode, consolidate._read_part
    alive, peak, calls, arrow_peak = [0], [0], [0], [0]

    def counted(data, key):
        table = real_decode(data, key)
        calls[0] += 1
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes())
        weakref.finalize(table, lambda: alive.__setitem__(0, alive[0] - 1))
        return table

    def part(path):
        table = real_part(path)
        arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes())
        return table

    monkeypatch.setattr(consolidate, "_decode", counted)
    monkeypatch.setattr(consolidate, "_read_part", part)
    consolidate_cells(store, keys[:3000], [], tmp_path / "t.parquet", path_of=cell_path, chunk=200, threads=4)
    assert calls[0] == 3000 and 1 <= peak[0] <= 200, peak[0]
    alive[0] = peak[0] = 0
    verify_cells(store, keys[:3000], path_of=cell_path, chunk=200, threads=4)
    assert 1 <= peak[0] <= 200, peak[0]

    def arrow_bytes(n: int) -> int:
        base, arrow_peak[0] = pa.total_allocated_bytes(), 0
        consolidate_cells(store, keys[:n], [], tmp_path / "t.parquet", path_of=cell_path, chunk=200, threads=1)
        return arrow_peak[0] - base

    small, large = arrow_bytes(600), arrow_bytes(3000)
    assert 0 < large < 1.5 * small, (small, large)  # five times the cells, about the same memory


@pytest.mark.parametrize("chunk", [1, 7, 1000])
@pytest.mark.parametrize("threads", [1, 8])
def test_chunk_size_and_threads_do_not_change_the_table(tmp_path, chunk, threads):
    store = Store(str(tmp_path / "store"))
    rows = [cell_row(i) for i in list(range(40)) + [999, 1500, 1501, 1999]]
    write_cells(store, rows)
    keys = [r["cell_key"] for r in rows]
    random.Random(chunk).shuffle(keys)  # any order the caller gives is the table's order
    out = tmp_path / "t.parquet"
    res = consolidate_cells(store, keys, [], out, path_of=cell_path, chunk=chunk, threads=threads)
    assert_same(pq.read_table(out), naive(store, keys, []))
    assert res.rows == len(keys) and res.missing == [] and res.corrupt == {}


def test_a_type_conflict_fails_as_concat_tables_does_and_writes_nothing(tmp_path):
    store = Store(str(tmp_path / "store"))
    write_cells(store, [{"cell_key": "a", "x": 1.0}, {"cell_key": "b", "x": "text"}])
    with pytest.raises(pa.ArrowTypeError):
        naive(store, ["a", "b"], [])
    with pytest.raises(pa.ArrowTypeError):
        consolidate_cells(store, ["a", "b"], [], tmp_path / "out" / "t.parquet", path_of=cell_path, chunk=1)
    assert os.listdir(tmp_path / "out") == []


# ---- verification ---------------------------------------------------------------------------------
def test_verify_cells_reports_each_kind_of_bad_file(tmp_path):
    store = Store(str(tmp_path / "store"))
    rows = [cell_row(i) for i in range(30)]
    write_cells(store, rows)
    keys = [r["cell_key"] for r in rows]
    good = store.get_bytes(cell_path(keys[0]))
    truncated, two_rows, other_key, garbled, empty = keys[3], keys[8], keys[12], keys[20], keys[27]
    store.put_bytes(cell_path(truncated), store.get_bytes(cell_path(truncated))[:-100])
    store.write_rows(cell_path(two_rows), [cell_row(8), cell_row(8)])
    store.write_rows(cell_path(other_key), [cell_row(13)])
    store.put_bytes(cell_path(garbled), garbled_footer(store.get_bytes(cell_path(garbled))))
    store.put_bytes(cell_path(empty), b"")
    with pytest.raises(OSError) as e:  # why decoding errors are classified here, not by is_corrupt
        pq.ParquetFile(pa.BufferReader(garbled_footer(good))).read()
    assert not is_corrupt(e.value)

    ok, bad = verify_cells(store, keys, path_of=cell_path, chunk=4, threads=3)
    broken = [truncated, two_rows, other_key, garbled, empty]
    assert ok == [k for k in keys if k not in broken]  # input order
    assert list(bad) == broken
    assert bad[truncated].startswith("ArrowInvalid") and "magic bytes" in bad[truncated]
    assert bad[two_rows].startswith("CorruptObject: 2 row(s)")
    assert key_of(13) in bad[other_key] and f"expected one row of {other_key}" in bad[other_key]
    assert bad[garbled].startswith("OSError") and "thrift" in bad[garbled]
    assert bad[empty].startswith("ArrowInvalid") and "0 bytes" in bad[empty]
    # the same verdicts as the driver's reader, one file at a time: every damaged file is content to it too
    for k in keys:
        try:
            read_cell(store, k)
            assert k in ok
        except CorruptObject:
            assert k in bad


def test_verify_cells_skips_a_file_that_vanished_since_the_listing(tmp_path):
    store = Store(str(tmp_path / "store"))
    write_cells(store, [cell_row(0), cell_row(1)])
    assert verify_cells(store, [key_of(0), "gone", key_of(1)], path_of=cell_path) == ([key_of(0), key_of(1)], {})


class Unreachable:
    """A filesystem whose every read fails the way an S3 outage does (an OSError that is not about content)."""

    def __init__(self):
        self.reads = 0

    def open_input_stream(self, path):
        self.reads += 1
        raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7, Couldn't connect")


def test_an_unreachable_store_raises_and_writes_nothing(tmp_path):
    store = Store(str(tmp_path / "store"))
    keys = [key_of(i) for i in range(500)]
    store._fs = fs = Unreachable()
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        verify_cells(store, keys, path_of=cell_path, chunk=1000, threads=1)
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        consolidate_cells(store, keys, [], tmp_path / "out" / "t.parquet", path_of=cell_path, chunk=1000, threads=1)
    assert os.listdir(tmp_path / "out") == []
    # the first failure ends the call: the chunk's other slices (16 of them) are cancelled or stop at their
    # next file, not each tried (on S3 every try would be seconds of connect timeouts and retries) — one read
    # per call with one thread, whatever the scheduling
    assert fs.reads == 2, fs.reads


# ---- failed, missing and corrupt cells ------------------------------------------------------------
def test_failed_rows_follow_the_cells_and_a_file_beats_a_failed_row(tmp_path):
    store = Store(str(tmp_path / "store"))
    write_cells(store, [cell_row(i) for i in (0, 1, 2, 3, 4, 5, 7, 8)])
    k = [key_of(i) for i in range(10)]
    store.put_bytes(cell_path(k[8]), b"not parquet")  # corrupt, and no failed row stands in for it
    store.write_rows(cell_path(k[2]), [cell_row(5)])  # corrupt (another cell's row), with a failed row
    failed = [failed_row(6, "oom"), failed_row(7, "stalled"), failed_row(2, "bad file")]  # 7's file exists
    out = tmp_path / "t.parquet"
    res = consolidate_cells(store, k, failed, out, path_of=cell_path, chunk=3)
    got = pq.read_table(out)
    assert_same(got, naive(store, k, failed))
    assert got.column("cell_key").to_pylist() == [k[0], k[1], k[3], k[4], k[5], k[7], k[6], k[2]]
    assert got.column("status").to_pylist() == ["ok"] * 6 + ["failed"] * 2
    assert got.column("error").to_pylist() == [None] * 6 + ["oom", "bad file"]
    assert got.column("trace").to_pylist()[-1] == '{"step": 2}'  # nested values as JSON, like write_rows
    assert res.rows == 8 and res.missing == [k[8], k[9]]
    assert set(res.corrupt) == {k[2], k[8]} and "ArrowInvalid" in res.corrupt[k[8]]
    assert res.columns == got.column_names


def test_edge_cases_nothing_at_all_and_everything_failed(tmp_path):
    store = Store(str(tmp_path / "store"))
    res = consolidate_cells(store, [], [], tmp_path / "empty.parquet", path_of=cell_path)
    assert res == ConsolidateResult(rows=0, missing=[], corrupt={}, columns=[])
    assert pq.read_table(tmp_path / "empty.parquet").equals(pa.table({}))

    keys = [key_of(i) for i in range(5)]
    res = consolidate_cells(store, keys, [], tmp_path / "none.parquet", path_of=cell_path)
    assert res.missing == keys and res.rows == 0 and pq.read_table(tmp_path / "none.parquet").num_columns == 0

    failed = [failed_row(i) for i in range(5)]
    res = consolidate_cells(store, keys, failed, tmp_path / "failed.parquet", path_of=cell_path, chunk=2)
    assert_same(pq.read_table(tmp_path / "failed.parquet"), rows_table(failed))
    assert res.rows == 5 and res.missing == []


# ---- atomic output --------------------------------------------------------------------------------
def test_the_output_is_complete_or_absent(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "store"))
    write_cells(store, [cell_row(i) for i in range(20)])
    keys = [key_of(i) for i in range(20)]
    out_dir = tmp_path / "run"
    out = out_dir / "results.parquet"
    real = pq.ParquetWriter.write_table
    writes = [0]

    def dies_after_first_part(self, table, *a, **kw):
        writes[0] += 1
        if writes[0] > 1:
            raise OSError("No space left on device")
        return real(self, table, *a, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", dies_after_first_part)
    with pytest.raises(OSError, match="No space"):
        consolidate_cells(store, keys, [], out, path_of=cell_path, chunk=5)
    assert writes[0] == 2 and os.listdir(out_dir) == []  # no table, no temp folder, no parts

    out.write_bytes(b"the previous run's table")  # a failed rerun leaves the old complete file alone
    writes[0] = 0
    with pytest.raises(OSError):
        consolidate_cells(store, keys, [], out, path_of=cell_path, chunk=5)
    assert os.listdir(out_dir) == ["results.parquet"] and out.read_bytes() == b"the previous run's table"

    monkeypatch.undo()
    consolidate_cells(store, keys, [], out, path_of=cell_path, chunk=5)
    assert os.listdir(out_dir) == ["results.parquet"] and pq.read_table(out).num_rows == 20


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="chunk=0"):
        verify_cells(Store("/nonexistent-store"), ["a"], path_of=cell_path, chunk=0)


# ---- S3 -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint(s3_server):
    """The session's moto S3 server with the AWS variables pointing at it and one bucket."""
    with s3_bucket_env(s3_server, BUCKET) as endpoint:
        yield endpoint


@pytest.mark.slow
@pytest.mark.service
def test_s3_store_on_moto(s3_endpoint, tmp_path):
    store = Store(f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}")
    rows = [cell_row(i) for i in range(200)]
    write_cells(store, rows)
    keys = [r["cell_key"] for r in rows] + [key_of(200)]  # the last one has no file
    store.write_rows(cell_path(keys[50]), [cell_row(51)])  # another cell's row
    store.put_bytes(cell_path(keys[60]), garbled_footer(store.get_bytes(cell_path(keys[60]))))
    failed = [failed_row(60, "recomputed and failed")]

    present = set(store.list("cells/"))
    listed = [k for k in keys if cell_path(k) in present]
    ok, bad = verify_cells(store, listed, path_of=cell_path, chunk=64)
    assert set(bad) == {keys[50], keys[60]} and ok == [k for k in keys[:200] if k not in bad]

    out = tmp_path / "t.parquet"
    res = consolidate_cells(store, keys, failed, out, path_of=cell_path, chunk=64)
    assert_same(pq.read_table(out), naive(store, keys, failed))
    assert res.rows == 199 and res.missing == [keys[50], keys[200]] and set(res.corrupt) == {keys[50], keys[60]}


def test_row_spool_reads_back_what_the_cell_file_holds_and_replaces_the_store_read(tmp_path):
    import math

    import numpy as np

    from components.io.consolidate import RowSpool

    store = Store(str(tmp_path / "store"))
    rows = [{"cell_key": f"k{i}", "status": "ok", "n": i, "x": [0.1, math.nan, math.inf, -math.inf][i % 4],
             "flag": bool(i % 2), "none": None, "nested": [1, 2], "np": np.float64(i) / 3, "npi": np.int64(i)}
            for i in range(9)]
    spool = RowSpool(tmp_path / "rows.jsonl")
    for r in rows:
        store.write_rows(f"cells/{r['cell_key']}.parquet", [r])
        spool.add(r)
    spool.flush()
    def same(a, b):  # NaN-aware: Table.equals says NaN != NaN
        return a.schema == b.schema and repr(a.to_pylist()) == repr(b.to_pylist())

    for r in rows:  # the spooled row is the table the store holds, value for value and type for type
        assert same(spool.table(r["cell_key"]), store._read_one(f"cells/{r['cell_key']}.parquet"))
    assert spool.table("absent") is None
    keys = [r["cell_key"] for r in rows]
    via_store = consolidate_cells(store, keys, [], tmp_path / "a.parquet", path_of=lambda k: f"cells/{k}.parquet")
    for k in keys[:5]:  # the spooled cells need no file: remove some from the store
        store.delete(f"cells/{k}.parquet")
    via_spool = consolidate_cells(store, keys, [], tmp_path / "b.parquet", path_of=lambda k: f"cells/{k}.parquet",
                                  local=spool.row)
    assert via_store.rows == via_spool.rows == 9 and not via_spool.missing
    assert same(pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet"))
    spool.close()
    assert not (tmp_path / "rows.jsonl").exists()
    # a spool holding some of the cells: runs of spooled rows (built as one table each) between store reads,
    # in one slice and split across threads
    part = RowSpool(tmp_path / "part.jsonl")
    for r in rows:
        store.write_rows(f"cells/{r['cell_key']}.parquet", [r])
        if int(r["cell_key"][1:]) in (0, 1, 2, 5, 6, 8):
            part.add(r)
    part.flush()
    for chunk, threads in ((9, 1), (4, 3)):
        out = tmp_path / f"c{chunk}.parquet"
        mixed = consolidate_cells(store, keys, [], out, path_of=lambda k: f"cells/{k}.parquet", local=part.row,
                                  chunk=chunk, threads=threads)
        assert mixed.rows == 9
        assert same(pq.read_table(out), pq.read_table(tmp_path / "a.parquet"))
    part.close()
