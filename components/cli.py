"""The entry points' shared preamble: environment defaults set before torch loads, bad input as one line.

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repository root (each entry point)
    from components.cli import run_cli                              # sets the defaults below on import
    ...
    def main(argv=None) -> int:
        args = parse_args(argv)
        return run_cli(lambda: _run(args))
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

__all__ = ["DEFAULT_ENV", "ArgumentParser", "out_folder", "run_cli"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one ``error:`` line (no usage block) and exit code 2, like every other
    bad input; ``--help`` still prints the full usage."""

    def __init__(self, description: str | None = None):
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)

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


def run_cli(body: Callable[[], int], also: tuple[type[BaseException], ...] = ()) -> int:
    """``body()``'s exit code; a ConfigError (or one of ``also``) is one ``error:`` line on stderr and exit 2."""
    from sragu_core.errors import ConfigError

    try:
        return body()
    except (ConfigError, *also) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
