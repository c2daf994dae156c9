"""Resuming a sweep without trusting the store: Tune's state files are checked before anything unpickles them.

Ray Tune resumes from pickles (``tuner.pkl``, searcher state, trial parameters) kept in the sweep's folder in
the store, which may be a shared S3 prefix other people can write.  So a sweep resumes only when asked
(``--resume``) and only after every file in that folder matches the SHA-256 digest this machine recorded
when its own run last stopped — recorded outside the store, in ``<out>/tune-state/``, a folder the user
owns.  A planted, changed, added or missing file, or a folder with no local record, is one ``error:`` line
and nothing is read.  Without ``--resume`` or ``--fresh``, finding an earlier sweep's state is an error too,
so the choice is always the user's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.fs as pafs

from sragu_core.errors import ConfigError

from ..io.store import Store

__all__ = ["sweep_path", "digest_file", "record_state", "verify_state", "resumable"]


def sweep_path(store: Store, sweep: str) -> str:
    """The sweep's experiment folder in the store's filesystem (``<root>/tune/<sweep>``)."""
    return f"{store.tune_location()[0]}/{sweep}"


def digest_file(state_dir: Path, sweep: str) -> Path:
    return state_dir / f"{sweep}.sha256.json"


def _digests(store: Store, path: str) -> dict[str, str]:
    infos = store.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with store.fs.open_input_stream(info.path) as f:
                out[info.path[len(path) + 1:]] = hashlib.sha256(f.read()).hexdigest()
    return out


def record_state(store: Store, sweep: str, state_dir: Path) -> None:
    """After Tune stopped (finished or interrupted): the digest of every file it left, kept locally."""
    state_dir.mkdir(parents=True, exist_ok=True)
    target = digest_file(state_dir, sweep)
    tmp = target.with_suffix(".tmp")
    path = sweep_path(store, sweep)
    tmp.write_text(json.dumps({"path": path, "files": _digests(store, path)}, indent=1, sort_keys=True))
    tmp.replace(target)


def _has_state(store: Store, path: str) -> bool:
    return store.fs.get_file_info(f"{path}/tuner.pkl").type == pafs.FileType.File


def verify_state(store: Store, sweep: str, state_dir: Path) -> None:
    """ConfigError (one line) unless every file of the sweep's state matches this machine's record.  Reads
    no pickle; ``tune_run`` calls it again right before ``Tuner.restore``, so the state cannot be swapped in
    the minutes between the command-line check and the restore."""
    path, record = sweep_path(store, sweep), digest_file(state_dir, sweep)
    try:
        expected = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError("--resume", path, f"sweep state this machine wrote (no record at {record}); "
                          "--fresh starts over") from None
    want, found = expected.get("files", {}), _digests(store, path)
    if expected.get("path") != path or found != want:
        changed = sorted(k for k in set(found) | set(want) if found.get(k) != want.get(k))
        raise ConfigError("--resume", path, f"unchanged sweep state ({changed[0] if changed else 'the folder'} "
                          f"differs from the digest recorded in {record}); --fresh starts over")


def resumable(store: Store, sweeps: list[str], state_dir: Path, *, resume: bool, fresh: bool) -> set[str]:
    """The sweeps to restore; ConfigError (one line) when state exists and the user did not choose, or when
    ``resume`` finds state that does not match this machine's record.  Reads no pickle."""
    if resume and fresh:
        raise ConfigError("--resume", "with --fresh", "one of --resume or --fresh")
    restore = set()
    for sweep in sweeps:
        path = sweep_path(store, sweep)
        if fresh or not _has_state(store, path):
            continue
        if not resume:
            raise ConfigError("--resume", "not given", f"--resume (continue the sweep state at {path}) or --fresh "
                              "(start over)")
        verify_state(store, sweep, state_dir)
        restore.add(sweep)
    if resume and not restore:
        raise ConfigError("--resume", "given", f"sweep state to continue (none at {sweep_path(store, sweeps[0])}"
                          f"{' …' if len(sweeps) > 1 else ''}; run without --resume to start)")
    return restore
