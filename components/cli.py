"""The entry points' shared preamble: environment defaults set before torch loads, bad input as one line.

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repository root (each entry point)
    from components.cli import run_cli                              # sets the defaults below on import
    ...
    def main(argv=None) -> int:
        args = parse_args(argv)                                     # --help answers here, before torch loads
        return run_cli(lambda: _run(args))                          # the heavy imports are inside _run

Light on purpose: this module imports only the standard library, so ``--help`` and argparse's own errors take
a fraction of a second (torch, Ray and MLflow take 5-10 s to import on a loaded 2-CPU machine).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

# one BLAS/torch thread per process: on 2 cores oversubscription is ~100x slower (docs/design.md §9)
DEFAULT_ENV = {"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
for _k, _v in DEFAULT_ENV.items():
    os.environ.setdefault(_k, _v)

__all__ = ["DEFAULT_ENV", "DEFAULT_PRESET", "ArgumentParser", "out_folder", "run_cli", "ray_job_copy",
           "check_job_paths", "preset_note"]

DEFAULT_PRESET = "default"  # what --preset means when omitted (preset_note says so at run time)
# Ray 2.60's job supervisor gives the driver of `ray job submit` this variable (its runtime env and metadata) and
# runs it in <session>/runtime_resources/working_dir_files/<package>/, a copy of --working-dir
_RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_RAY_COPIES = "runtime_resources"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one ``error:`` line (no usage block) and exit code 2, like every other
    bad input; ``--help`` still prints the full usage."""

    def __init__(self, description: str | None = None, epilog: str | None = None):
        super().__init__(description=description, epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str):
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def out_folder(raw: str) -> Path:
    """``--out`` as an absolute path, refused (one line naming ``--out``) unless it is a folder or can become one;
    nothing is created here."""
    from sragu_core.errors import ConfigError

    out = Path(raw).expanduser().resolve()
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError("--out", raw, f"a folder ({existing} is a file)")
    if not os.access(existing, os.W_OK):
        raise ConfigError("--out", raw, f"a writable folder ({existing} is not writable)")
    return out


def ray_job_copy() -> Path | None:
    """The working directory when this process is the driver of a ``ray job submit`` running in Ray's copy of
    ``--working-dir`` (which Ray deletes once the job's files are garbage-collected), else None."""
    cwd = Path.cwd().resolve()
    return cwd if _RAY_JOB_ENV in os.environ and _RAY_COPIES in cwd.parts else None


def check_job_paths(out: str, store: str | None) -> None:
    """Inside a Ray job's working-dir copy, a relative ``--out`` or ``--store`` would put every result in files
    Ray deletes after the job: refused (one ConfigError line naming the flag and the fix) before any work."""
    copy = ray_job_copy()
    if copy is None:
        return
    from sragu_core.errors import ConfigError

    why = f"inside a Ray job ({copy} is the job's copy of --working-dir, which Ray deletes after the job)"
    if not Path(out).expanduser().is_absolute():
        raise ConfigError("--out", out, f"an absolute path {why}, e.g. --out /data/sragu-runs")
    if store is not None:
        scheme, sep, rest = store.partition("://")
        local = rest if scheme == "file" else None if sep else store  # s3:// and other schemes are not local
        if local is not None and not Path(local).expanduser().is_absolute():
            raise ConfigError("--store", store, f"s3://bucket/prefix or an absolute folder {why}, "
                                                "e.g. --store s3://my-bucket/sragu")


def preset_note(preset: str | None, size: str) -> str | None:
    """The line a run prints when ``--preset`` was omitted: which preset runs, its ``size``, how to pick another."""
    if preset is not None:
        return None
    return (f"note: no --preset given, so the {DEFAULT_PRESET!r} preset runs ({size}); --preset smoke --smoke checks "
            "the set-up in seconds and --list presets lists them all")


def run_cli(body: Callable[[], int], also: tuple[type[BaseException], ...] = ()) -> int:
    """``body()``'s exit code; a ConfigError (or one of ``also``) is one ``error:`` line on stderr and exit 2."""
    from sragu_core.errors import ConfigError

    try:
        return body()
    except (ConfigError, *also) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
