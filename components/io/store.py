"""The benchmark's artifact store: a local folder or ``s3://bucket/prefix``, addressed by relative keys.

Layout (keys are ``/``-separated paths relative to the store root)::

    artifacts/originals/<hash>.pt      trained originals / retrained references (torch state_dicts)
    cells/<cell_key>.parquet           one flat Parquet row set per finished cell
    <anything>.json                    resolved configs, manifests

One object per finished cell means a crashed or pre-empted Ray task leaves nothing behind and a rerun
skips what exists; the consolidated table is ``read_table(list("cells/"))``, built by the driver.

Why two S3 clients: ``pyarrow.fs`` reads and writes the files and Parquet (the same code path as local
files, zero-copy into Arrow), while object-level calls that pyarrow either lacks or does awkwardly go to
boto3: the reachability check (``head_bucket`` with short timeouts, so a wrong endpoint is one line
before any work, not minutes of retries), listing, and deletes (pyarrow's ``delete_file`` re-creates an
empty "directory marker" object for the parent). pyarrow ignores ``AWS_ENDPOINT_URL*`` (docs/design.md §9), so the
endpoint is read here and passed as ``endpoint_override``; region and credentials follow the AWS chain.

Every write is atomic: local writes go to a hidden ``.<name>.<random>.partial`` file in the destination
folder, then ``os.replace``; S3 writes are serialised in memory first and sent as one object, which S3
only shows once complete. A reader never sees half a file under its final key. ``get_torch`` loads with
``weights_only=True``: store state_dicts, tensors and plain containers, never pickled objects.

Reads verify, and what fails verification heals: :meth:`Store.quarantine` moves an object whose content is
unreadable or not what its key promises to ``quarantine/<stamp>/<key>`` (with ``<key>.reason.json`` next to
it) so the next reader recomputes it instead of failing on it forever.  :func:`is_corrupt` tells content
errors (quarantine and recompute) from an unreachable store (fail the cell, keep the object).  Parquet objects
are written with page checksums, fetched whole and decoded in memory (:func:`parquet_from_bytes`), so a
damaged file is content (``CorruptObject``) whatever exception pyarrow raises for it.

:meth:`Store.create` writes a key only if it does not exist yet (``O_EXCL`` locally, ``If-None-Match: *``
on S3): the primitive behind the cell claims of ``components/io/leases.py``.

A ``Store`` pickles as its URI (a Ray task re-creates it cheaply); clients are built lazily per process.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sragu_core.errors import ConfigError

__all__ = ["CorruptObject", "Store", "is_corrupt", "parquet_from_bytes", "reason", "rows_table"]

_PARTIAL = ".partial"  # suffix of in-flight local temp files; never listed
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_URI_HELP = "a local folder path or s3://bucket[/prefix]"


def _clean_rel(path: str, what: str) -> str:
    """Validate a relative '/'-separated path (a key or an S3 prefix); returns it without edge slashes."""
    rel = path.strip("/")
    if "\\" in rel or (rel and any(p in ("", ".", "..") for p in rel.split("/"))):
        raise ConfigError(what, path, "a relative '/'-separated path without empty, '.' or '..' parts")
    return rel


def _as_bytes(data: Any) -> bytes | bytearray | memoryview:
    return data if isinstance(data, (bytes, bytearray, memoryview)) else bytes(data)


def _flat(value: Any) -> Any:
    """Nested values become JSON strings so every cell file has flat scalar columns."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return value


def rows_table(rows: list[dict]) -> pa.Table:
    """The Arrow table :meth:`Store.write_rows` writes: columns are the union of the rows' keys (in first-seen
    order), nested values JSON strings.  The driver builds a finished cell's table from its row with this, so a
    table assembled in memory equals one read back from the cell files."""
    columns: dict[str, list] = {}
    for row in rows:
        for name in row:
            columns.setdefault(name, [])
    for name, values in columns.items():
        values.extend(_flat(row.get(name)) for row in rows)
    return pa.table(columns)


def is_corrupt(e: BaseException) -> bool:
    """True when reading an object failed because of its content (truncated, garbage, refused by
    ``weights_only``, wrong shape or key), not because the store could not be reached."""
    if isinstance(e, (pa.ArrowInvalid, json.JSONDecodeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError,
                      KeyError, TypeError, UnicodeDecodeError, CorruptObject)):
        return True
    return isinstance(e, RuntimeError) and any(w in str(e) for w in ("PytorchStreamReader", "zip archive",
                                                                      "Weights only load failed"))


def reason(e: BaseException) -> str:
    """One short line for a quarantine record: the error's type and the first sentence of its message."""
    text = (str(e).strip().splitlines() or [""])[0]
    text = re.sub(r"\. .*", ".", text)  # torch and pyarrow go on for paragraphs
    return f"{type(e).__name__}: {text[:160]}"


class CorruptObject(ValueError):
    """An object that was read fine but is not what its key promises (another cell's row, a wrong key), or whose
    bytes do not decode."""


def parquet_from_bytes(data: bytes) -> pa.Table:
    """The table in ``data`` (a whole Parquet file, already fetched), its page checksums verified where it has
    them; CorruptObject with the decoder's reason when it does not decode.

    The bytes are in memory, so whatever goes wrong here is about their content, whatever the exception type:
    pyarrow reports a damaged footer or page as ``OSError`` ("Couldn't deserialize thrift", "Corrupt snappy
    compressed data"), which :func:`is_corrupt` could not tell from a network error.  ``pre_buffer=False`` and
    ``use_threads=False``: one-row files decode fastest on the calling thread, and ``pq.read_table`` on a
    damaged file now and then aborts the interpreter at exit (apache/arrow#34314)."""
    try:
        return pq.ParquetFile(pa.BufferReader(data), pre_buffer=False,
                              page_checksum_verification=True).read(use_threads=False)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 — see the docstring: content, whatever the type
        raise CorruptObject(reason(e)) from e


class Store:
    """Artifact store at ``uri`` (a local folder, created on first write, or ``s3://bucket/prefix``)."""

    def __init__(self, uri: str):
        if not isinstance(uri, str) or not uri.strip():
            raise ConfigError("store", uri, _URI_HELP)
        scheme, sep, rest = uri.partition("://")
        if not sep or scheme == "file":
            self.kind = "local"
            self.root = os.path.abspath(os.path.expanduser(rest if sep else uri))
            self.uri = self.root
        elif scheme == "s3":
            bucket, _, prefix = rest.partition("/")
            if not _BUCKET.match(bucket):
                raise ConfigError("store", uri, f"{_URI_HELP} with a bucket name of 3-63 letters, digits, '.-_'")
            self.kind, self.bucket = "s3", bucket
            self.prefix = _clean_rel(prefix, "store prefix")
            self.root = f"{bucket}/{self.prefix}".rstrip("/")
            self.uri = f"s3://{self.root}"
        else:
            raise ConfigError("store", uri, f"{_URI_HELP} (scheme {scheme!r} is not supported)")
        self._fs: pafs.FileSystem | None = None
        self._client = None

    def __reduce__(self):
        return (Store, (self.uri,))

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    @staticmethod
    def _endpoint() -> str | None:
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None

    @staticmethod
    def _region() -> str:
        return os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            if self.kind == "local":
                self._fs = pafs.LocalFileSystem()
            else:
                kw: dict[str, Any] = {"region": self._region()}
                endpoint = self._endpoint()
                if endpoint:
                    scheme, sep, host = endpoint.partition("://")
                    kw["endpoint_override"] = host.rstrip("/") if sep else endpoint
                    kw["scheme"] = scheme if sep else "https"
                key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
                if key and secret:  # otherwise pyarrow walks the default chain (config files, IMDS)
                    kw.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
                # bounded: an S3 outage fails a read or write in seconds (a failed cell, a missing row) instead
                # of blocking the driver for minutes
                kw.update(connect_timeout=5, request_timeout=60,
                          retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
                self._fs = pafs.S3FileSystem(**kw)
        return self._fs

    def tune_location(self) -> tuple[str, pafs.FileSystem | None]:
        """(storage_path, storage_filesystem) for Ray Tune's ``RunConfig``: ``<root>/tune`` in this store."""
        return f"{self.root}/tune", (self.fs if self.kind == "s3" else None)

    def boto3_client(self, config=None):
        """A boto3 S3 client for the same endpoint/region/credentials (cached unless ``config`` is given)."""
        if self.kind != "s3":
            raise ConfigError("store", self.uri, "an s3:// URI for boto3_client()")
        if config is None and self._client is not None:
            return self._client
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self._endpoint(),
            region_name=self._region(),
            config=config or Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3}),
        )
        if config is None:
            self._client = client
        return client

    def _path(self, key: str) -> str:
        rel = _clean_rel(key, "store key")
        if not rel:
            raise ConfigError("store key", key, "a non-empty relative path such as 'cells/ab12.parquet'")
        return f"{self.root}/{rel}"

    def _object_key(self, key: str) -> str:
        rel = _clean_rel(key, "store key")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _write(self, key: str, fill: Callable[[Any], Any]) -> None:
        """Atomically create ``key`` from ``fill(binary_file)``; on any error nothing appears."""
        path = self._path(key)
        if self.kind == "s3":
            buf = io.BytesIO()
            fill(buf)  # fails before any request: no partial object can exist
            with self.fs.open_output_stream(path) as out:
                out.write(buf.getbuffer())
            return
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=_PARTIAL)
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if nothing is there yet; False (and nothing written) when it already exists."""
        if self.kind == "s3":
            from botocore.exceptions import ClientError

            try:
                self.boto3_client().put_object(Bucket=self.bucket, Key=self._object_key(key), Body=bytes(data),
                                               IfNoneMatch="*")
            except ClientError as e:
                if str(e.response.get("Error", {}).get("Code", "")) in ("PreconditionFailed", "412",
                                                                           "ConditionalRequestConflict", "409"):
                    return False
                raise
            return True
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}{_PARTIAL}"
        with open(tmp, "wb") as f:  # complete content first, then an atomic no-replace link to the final name
            f.write(_as_bytes(data))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def quarantine(self, key: str, reason: str) -> str:
        """Move ``key`` aside to ``quarantine/<stamp>/<key>`` with a ``.reason.json``; returns the new key.

        Called when ``key`` failed verification, so the next reader recomputes it; the bytes are kept for
        a post-mortem (``quarantine/`` is never read by the benchmark)."""
        stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        dest = f"quarantine/{stamp}/{_clean_rel(key, 'store key')}"
        try:
            self.put_bytes(dest, self.get_bytes(key))
        except FileNotFoundError:
            pass  # already moved by another reader
        self.put_json(f"{dest}.reason.json", {"key": key, "reason": reason, "time": time.time()})
        self.delete(key)
        return dest

    def quarantined_since(self, t0: float) -> list[dict]:
        """The ``{"key", "reason", "time", "moved_to"}`` records of objects quarantined at or after ``t0``."""
        out = []
        for k in self.list("quarantine/"):
            if k.endswith(".reason.json"):
                try:
                    rec = self.get_json(k)
                except Exception:  # noqa: BLE001, S112 — a post-mortem record; never fail a run on it
                    continue
                if rec.get("time", 0) >= t0:
                    out.append({**rec, "moved_to": k[: -len(".reason.json")]})
        return sorted(out, key=lambda r: r["time"])

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self._path(key)).type == pafs.FileType.File

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda f: f.write(_as_bytes(data)))

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri}: no object {key!r}") from None

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (deletes are retried by tasks)."""
        if self.kind == "s3":
            self.boto3_client().delete_object(Bucket=self.bucket, Key=self._object_key(key))
            return
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        """Keys that start with ``prefix`` (string prefix, as in S3), relative to the root, sorted."""
        if "\\" in prefix or any(p in (".", "..") for p in prefix.split("/")):
            raise ConfigError("store prefix", prefix, "a relative '/'-separated key prefix")
        prefix = prefix.lstrip("/")
        if self.kind == "s3":
            base = f"{self.prefix}/" if self.prefix else ""
            pages = (
                self.boto3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
            )
            keys = [o["Key"][len(base) :] for page in pages for o in page.get("Contents", [])]
            return sorted(k for k in keys if k and not k.endswith("/"))
        folder = os.path.join(self.root, prefix.rpartition("/")[0])
        if not os.path.isdir(folder):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(folder, recursive=True))
        keys = (os.path.relpath(i.path, self.root).replace(os.sep, "/") for i in infos if i.type == pafs.FileType.File)
        return sorted(k for k in keys if k.startswith(prefix) and not k.endswith(_PARTIAL))

    def put_json(self, key: str, obj: Any) -> None:
        text = json.dumps(obj, indent=2, sort_keys=True)
        self._write(key, lambda f: f.write(text.encode()))

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def put_torch(self, key: str, obj: Any) -> None:
        """Save tensors / state_dicts / plain containers (what ``weights_only=True`` can load back)."""
        import torch

        self._write(key, lambda f: torch.save(obj, f))

    def get_torch(self, key: str) -> Any:
        import torch

        return torch.load(io.BytesIO(self.get_bytes(key)), map_location="cpu", weights_only=True)

    def write_rows(self, key: str, rows: list[dict]) -> None:
        """One Parquet object; columns are the union of the rows' keys, nested values JSON strings.  Its pages
        carry CRC32 checksums, which every read verifies: a flipped byte in a value is caught, not read."""
        table = rows_table(rows)
        self._write(key, lambda f: pq.write_table(table, f, write_page_checksum=True))

    def _read_one(self, key: str) -> pa.Table:
        """Fetched whole, then decoded (:func:`parquet_from_bytes`): a fetch fails as the store fails
        (unreachable, missing), a decode as CorruptObject."""
        return parquet_from_bytes(self.get_bytes(key))

    def read_rows(self, key: str) -> list[dict]:
        return self._read_one(key).to_pylist()

    def read_table(self, keys: list[str]) -> pa.Table:
        """Concatenate cell files whose columns differ: union of columns, nulls where absent, types widened."""
        tables = [self._read_one(k) for k in keys]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="permissive")

    def check(self) -> None:
        """Before any work: the endpoint answers and the bucket exists, or the folder is writable."""
        if self.kind == "local":
            # probe the folder, or its nearest existing parent, without creating anything: a run that
            # fails a later preflight check must leave no trace
            existing = Path(self.root)
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            try:
                if not existing.is_dir():
                    raise NotADirectoryError(f"{existing} is not a folder")
                fd, probe = tempfile.mkstemp(dir=existing, prefix=".check.", suffix=_PARTIAL)
                os.close(fd)
                os.unlink(probe)
            except OSError as e:
                raise ConfigError("store", self.uri, f"a writable folder ({e.strerror or e})") from None
            return
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        endpoint = self._endpoint() or f"the AWS S3 endpoint for {self._region()}"
        fast = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1})
        try:
            client = self.boto3_client(config=fast)
        except ValueError:  # botocore: "Invalid endpoint: ..."
            var = "AWS_ENDPOINT_URL_S3" if os.environ.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
            raise ConfigError(var, self._endpoint(), "an http(s)://host[:port] URL of an S3 endpoint") from None
        try:
            client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            why = "AWS credentials (none found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            raise ConfigError("store", self.uri, why) from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                why = f"an existing bucket ({self.bucket!r} does not exist at {endpoint}; create it first)"
            elif code in ("403", "AccessDenied", "Forbidden"):
                why = f"credentials allowed to read bucket {self.bucket!r} ({endpoint} answered 403 Forbidden)"
            else:
                why = f"a usable bucket ({endpoint} answered {code or e})"
            raise ConfigError("store", self.uri, why) from None
        except (BotoCoreError, OSError) as e:
            why = f"a reachable S3 endpoint ({endpoint} did not answer: {type(e).__name__}); set AWS_ENDPOINT_URL"
            raise ConfigError("store", self.uri, why) from None
