"""The grid's consolidated table, built from the cell files with bounded memory.

The driver used to keep every finished cell's one-row ``pa.Table`` until the end and concatenate them
(``pa.concat_tables(..., promote_options="permissive")``).  Each one-row table carries its own Arrow arrays
and 64-byte-aligned buffers for every column, so at 10k-100k cells that dict alone is hundreds of MB of
driver memory.  Here the table is built from the store instead, a chunk of cells at a time:

1. read ``chunk`` cell files on a thread pool (S3 round trips overlap; pyarrow releases the GIL while it
   decodes), verify each, and write the chunk's permissive concatenation to a temporary Arrow IPC part;
2. unify the parts' schemas (``pa.unify_schemas(..., promote_options="permissive")``), then stream the parts
   into one Parquet file with a single ``ParquetWriter``, each cast to the unified schema (all-null columns
   where a part lacks one).

At most one chunk of cell tables, or one part, is alive at any time.  The result equals the one-shot
``pa.concat_tables(<verified cell tables in key order> + [rows_table(<failed rows without a file>)],
promote_options="permissive")``: column order is first-seen order and types are widened (null+double →
double, int64+double → double) as ``concat_tables`` does, because permissive unification is the same
fold whether applied to all tables at once or chunk by chunk; a type conflict it cannot resolve (string vs
double) raises ``pa.ArrowTypeError`` here as it does there.  No cells and no failed rows give a file with no
columns and no rows (``pa.table({})`` read back), as the driver's in-memory version did.

The output appears atomically (``os.replace`` from a hidden ``.<name>.<random>.partial`` folder next to it,
which is removed on success and on error), so a crash never leaves a half-written table under its name.

Verification is :func:`components.execution.tasks.read_cell`'s: a cell file must be one row whose
``cell_key`` is its key.  A file's bytes are fetched first and decoded from memory, so the two failures
are told apart by where they happen, not by the exception type: fetching can fail because the store is
unreachable (raised, unless :func:`~components.io.store.is_corrupt` says otherwise), decoding bytes already
in memory can only fail because of their content (corrupt, with the decoder's reason:
:func:`~components.io.store.parquet_from_bytes`, which also verifies the pages' checksums).

This module knows nothing of the execution layer: the caller names where a key's file is (``path_of``,
normally ``tasks.cell_path``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .store import CorruptObject, Store, is_corrupt, parquet_from_bytes, reason, rows_table

__all__ = ["ConsolidateResult", "RowSpool", "consolidate_cells", "verify_cells"]

_IPC = pa.ipc.IpcWriteOptions(compression="lz4")  # temporary parts: cheap to write, exact types on reading back
_SLICE = 32  # keys per thread task


@dataclass(frozen=True)
class ConsolidateResult:
    """What :func:`consolidate_cells` wrote.

    Every key passed in is exactly one of: a row from its verified file, a row from ``failed_rows``, or in
    ``missing``.  ``corrupt`` names the keys whose file exists but did not verify (with the reason, for
    ``Store.quarantine``); such a key is also in ``missing`` unless a failed row stands in for it."""

    rows: int
    missing: list[str]
    corrupt: dict[str, str]
    columns: list[str]


def _check(table: pa.Table, key: str) -> pa.Table:
    """``table`` if it is one row whose ``cell_key`` is ``key``; else CorruptObject (read_cell's wording)."""
    i = table.schema.get_field_index("cell_key")
    if table.num_rows != 1 or i < 0 or table.column(i)[0].as_py() != key:
        found = table.column(i).to_pylist()[:3] if i >= 0 else "no cell_key"
        raise CorruptObject(f"{table.num_rows} row(s) with cell_key {found}, expected one row of {key}")
    return table


def _decode(data: bytes, key: str) -> pa.Table:
    """The verified one-row table in ``data`` (a whole cell file); CorruptObject when it is not one."""
    return _check(parquet_from_bytes(data), key)


class RowSpool:
    """The rows this driver received, on local disk (``path``: one JSON object a line, numbers exact), by cell
    key: the consolidated table takes this run's cells from here, so it needs no store read for them and
    survives a store that went away mid-run, and the driver holds a byte offset per cell, not a table.

    A row reads back as the table the cell task wrote to the store (:func:`~components.io.store.rows_table` of
    the same values; JSON keeps ints, floats — NaN and ±inf included — bools, None and strings exactly)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = open(self.path, "a+b")  # noqa: SIM115 — closed by close(); read back with pread
        self._index: dict[str, tuple[int, int]] = {}

    def add(self, row: dict) -> None:
        data = (json.dumps(row, default=_plain) + "\n").encode()
        self._index[row["cell_key"]] = (self._f.tell(), len(data))
        self._f.write(data)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._index)

    def flush(self) -> None:
        self._f.flush()

    def row(self, key: str) -> dict | None:
        """The row of ``key``, or None when this run did not receive it (thread-safe: ``pread``)."""
        at = self._index.get(key)
        if at is None:
            return None
        return json.loads(os.pread(self._f.fileno(), at[1], at[0]))

    def table(self, key: str) -> pa.Table | None:
        """The one-row table of ``key`` (what its cell file holds), or None when this run did not receive it."""
        row = self.row(key)
        return None if row is None else rows_table([row])

    def close(self, remove: bool = True) -> None:
        self._f.close()
        if remove:
            self.path.unlink(missing_ok=True)


def _plain(x: Any) -> Any:
    """numpy scalars → Python scalars for JSON."""
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON-serialisable")


def _load(store: Store, key: str, path_of: Callable[[str], str]) -> tuple[pa.Table | None, str | None]:
    """(table, None) for a verified cell file, (None, None) when there is no file, (None, reason) when it is
    corrupt.  An unreachable store raises."""
    try:
        try:
            with store.fs.open_input_stream(store._path(path_of(key))) as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return _decode(data, key), None
    except Exception as e:
        if not is_corrupt(e):
            raise
        # a decoding failure carries the decoder's own reason; a wrong row or key says so
        return None, (reason(e.__cause__) if isinstance(e, CorruptObject) and e.__cause__ else reason(e))


def _read_many(store: Store, keys: Sequence[str], path_of: Callable[[str], str],
               keep: bool, local=None, failed: threading.Event | None = None
               ) -> tuple[pa.Table | None, list[str], dict[str, str]]:
    """(the verified tables of ``keys`` concatenated in order if ``keep``, the keys that verified, ``{key:
    reason}`` of corrupt files) for one thread's share of a chunk; the one-row tables die here.  ``failed``:
    set by the first slice whose read raises, so the slices already running or started before the caller
    cancels the rest stop at their next file instead of trying every one.  ``local(key)``: the cell's row when
    the caller holds it (:meth:`RowSpool.row`), read instead of its file; consecutive such rows become one table
    (:func:`~components.io.store.rows_table` of them: the concatenation of their one-row tables, built in one
    call instead of one per cell)."""
    tables, ok, bad, rows = [], [], {}, []
    for key in keys:
        if failed is not None and failed.is_set():
            return None, [], {}
        if local is not None and (row := local(key)) is not None:
            ok.append(key)
            if keep:
                rows.append(row)
            continue
        if rows:
            tables.append(rows_table(rows))
            rows = []
        try:
            table, why = _load(store, key, path_of)
        except BaseException:
            if failed is not None:
                failed.set()
            raise
        if table is not None:
            ok.append(key)
            if keep:
                tables.append(table)
        elif why is not None:
            bad[key] = why
    if rows:
        tables.append(rows_table(rows))
    return (pa.concat_tables(tables, promote_options="permissive") if tables else None), ok, bad


def _chunks(store: Store, keys: Sequence[str], path_of: Callable[[str], str], keep: bool, *, threads: int,
            chunk: int, consume: Callable[[list[pa.Table], list[str], dict[str, str]], Any], local=None) -> None:
    """``consume(tables, verified keys, corrupt)`` for consecutive chunks of ``chunk`` keys, in order.

    A chunk is read by ``threads`` threads in slices of a few dozen keys (one task per file costs more in
    hand-offs than a small file takes to decode).  A chunk's results are dropped before the next chunk is
    read, and on an error the chunk's slices not yet started are cancelled (an unreachable store fails in
    seconds, not after ``chunk`` timeouts)."""
    if threads < 1 or chunk < 1:
        raise ValueError(f"threads={threads}, chunk={chunk}: both must be at least 1")
    step = max(1, min(_SLICE, -(-chunk // threads)))
    store.fs  # noqa: B018 — build the filesystem once here, not racing in the threads
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="consolidate") as pool:
        for start in range(0, len(keys), chunk):
            batch = keys[start : start + chunk]
            failed = threading.Event()
            futures = [pool.submit(_read_many, store, batch[i : i + step], path_of, keep, local, failed)
                       for i in range(0, len(batch), step)]
            try:
                results = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            del futures  # each future holds its result too
            tables = [t for t, _, _ in results if t is not None]
            ok = [k for _, keys_ok, _ in results for k in keys_ok]
            bad = {k: why for _, _, b in results for k, why in b.items()}
            del results
            consume(tables, ok, bad)
            del tables


def verify_cells(store: Store, keys: Sequence[str], *, path_of: Callable[[str], str], threads: int = 8,
                 chunk: int = 512) -> tuple[list[str], dict[str, str]]:
    """(keys whose file verifies, in input order; ``{key: reason}`` of those whose file does not).

    For cells the caller found in a listing of the store (``store.list``).  Each file is read and checked (one
    row whose ``cell_key`` is its key) on ``threads`` threads, ``chunk`` files in flight at most; no table is
    kept.  A file that vanished since the listing (another driver quarantined it) is in neither result, so
    its cell is simply run again.  A store that cannot be reached raises."""
    ok: list[str] = []
    bad: dict[str, str] = {}

    def consume(tables: list[pa.Table], verified: list[str], corrupt: dict[str, str]) -> None:
        ok.extend(verified)
        bad.update(corrupt)

    _chunks(store, keys, path_of, False, threads=threads, chunk=chunk, consume=consume)
    return ok, bad


def _write_part(table: pa.Table, path: Path) -> pa.Schema:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=_IPC) as w:
        w.write_table(table)
    return table.schema


def _read_part(path: Path) -> pa.Table:
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(source).read_all()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order: cast where the type was widened, nulls where absent."""
    arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def consolidate_cells(store: Store, keys: Sequence[str], failed_rows: Sequence[dict], out_path: str | os.PathLike,
                      *, path_of: Callable[[str], str], chunk: int = 1000, threads: int = 8,
                      local: Callable[[str], dict | None] | None = None) -> ConsolidateResult:
    """Write the grid's table to the local Parquet file ``out_path``: the row of every key in ``keys`` whose
    file exists and verifies (in the order of ``keys``), then ``failed_rows`` (in their order, as
    :func:`~components.io.store.rows_table` turns them into a table) except those whose ``cell_key`` has a
    verified file (the file wins, so a rerun adds no duplicate row).

    Memory: one chunk of ``chunk`` cell tables (read on ``threads`` threads), or one part of that size, at a
    time.  Temporary files go in a hidden folder next to ``out_path``, removed on success and on error; the
    file appears complete or not at all.  Corrupt cell files are reported in the result, not quarantined
    (the caller decides).  A store that cannot be reached raises, and nothing is written.  ``local(key)``: a
    cell's row when the caller holds it (:meth:`RowSpool.row`), used instead of its file."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".partial"))
    try:
        parts: list[tuple[Path, pa.Schema]] = []
        found: set[str] = set()
        corrupt: dict[str, str] = {}

        def consume(tables: list[pa.Table], verified: list[str], bad: dict[str, str]) -> None:
            found.update(verified)
            corrupt.update(bad)
            if tables:
                # combined: one contiguous array per column instead of one per cell
                merged = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
                path = work / f"part-{len(parts):06d}.arrow"
                parts.append((path, _write_part(merged, path)))

        _chunks(store, keys, path_of, True, threads=threads, chunk=chunk, consume=consume, local=local)

        fails = [r for r in failed_rows if r.get("cell_key") not in found]
        if fails:
            path = work / f"part-{len(parts):06d}.arrow"
            parts.append((path, _write_part(rows_table(list(fails)), path)))

        schema = pa.unify_schemas([s for _, s in parts], promote_options="permissive") if parts else pa.schema([])
        tmp, rows = work / out_path.name, 0
        with open(tmp, "wb") as f:
            with pq.ParquetWriter(f, schema) as writer:
                for path, _ in parts:
                    part = _conform(_read_part(path), schema)
                    writer.write_table(part)
                    rows += part.num_rows
                    del part
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    failed_keys = {r.get("cell_key") for r in failed_rows}
    missing = [k for k in keys if k not in found and k not in failed_keys]
    return ConsolidateResult(rows=rows, missing=missing, corrupt=corrupt, columns=schema.names)
