"""Cell claims in the store, so drivers sharing a store never compute a cell twice (docs/design.md §7).

Before it runs a cell, a driver *claims* it: it creates ``leases/cells/<cell_key>.json`` naming itself,
with :meth:`Store.create` (``O_EXCL`` on a local folder, ``If-None-Match: *`` on S3), so of two drivers
racing for a cell exactly one gets it.  A driver proves it is alive with a *heartbeat* object,
``leases/drivers/<driver_id>.json``, rewritten every ``ttl/4`` seconds by a background thread.  A claim
is honoured while its driver is alive:

- a driver on this machine is alive while its process is (pid and start time match), so a claim of a
  driver that crashed or was SIGKILLed here is released at once;
- a driver elsewhere is alive while its heartbeat is younger than ``ray.lease_ttl_s`` (wall clocks of the
  machines are assumed to agree to within a fraction of the TTL).

A claim whose driver is gone is taken over: deleted, then created again by the new owner (two drivers
taking over the same stale claim at the same instant can both win; the cost is one duplicate computation
of a deterministic, content-addressed result, never a wrong row).  A driver releases its claims as its
cells finish and its heartbeat when it exits.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil

from .store import Store

__all__ = ["Leases", "driver_identity"]


def driver_identity() -> dict:
    """Who this driver is: host, pid, process start time and a random token."""
    me = psutil.Process()
    host = socket.gethostname()
    return {"id": f"{host}-{me.pid}-{uuid.uuid4().hex[:8]}", "host": host, "pid": me.pid,
            "started": me.create_time()}


def _local_alive(rec: dict) -> bool:
    try:
        return abs(psutil.Process(int(rec["pid"])).create_time() - float(rec["started"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


class Leases:
    """This driver's claims on cells in ``store``; use as a context manager (starts and stops the heartbeat)."""

    def __init__(self, store: Store, ttl_s: float, identity: dict | None = None):
        self.store, self.ttl_s = store, float(ttl_s)
        self.me = identity or driver_identity()
        self.id = self.me["id"]
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._releaser: ThreadPoolExecutor | None = None

    # ---------------------------------------------------------------- heartbeat
    def beat(self) -> None:
        self.store.put_json(f"leases/drivers/{self.id}.json", {**self.me, "time": time.time(), "ttl_s": self.ttl_s})

    def __enter__(self) -> Leases:
        """Start heartbeating (the first beat is written before this returns)."""
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="sragu-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.beat()
            except Exception:  # noqa: BLE001, S112 — a missed beat only shortens the lease; retried next tick
                continue

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._releaser is not None:
            self._releaser.shutdown(wait=True)
        for key in list(self._held):
            self.release(key)
        try:
            self.store.delete(f"leases/drivers/{self.id}.json")
        except Exception:  # noqa: BLE001, S110 — an orphan heartbeat lapses after the TTL anyway
            pass

    # ---------------------------------------------------------------- claims
    @property
    def held(self) -> frozenset[str]:
        """The cell keys this driver holds claims on."""
        return frozenset(self._held)

    def alive(self, driver_id: str) -> bool:
        """Whether the driver ``driver_id`` still holds its claims."""
        if driver_id == self.id:
            return True
        try:
            rec = self.store.get_json(f"leases/drivers/{driver_id}.json")
        except FileNotFoundError:
            return False
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if rec.get("host") == self.me["host"]:
            return _local_alive(rec)
        return time.time() - float(rec.get("time", 0)) < self.ttl_s

    def owner(self, cell_key: str) -> str | None:
        """The driver holding a live claim on ``cell_key``; None when unclaimed or its driver is gone."""
        try:
            rec = self.store.get_json(self._path(cell_key))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        driver = rec.get("driver")
        return driver if isinstance(driver, str) and self.alive(driver) else None

    def claim(self, cell_key: str) -> bool:
        """Claim ``cell_key`` for this driver; False when another live driver holds it."""
        path = self._path(cell_key)
        body = json.dumps({"driver": self.id, "time": time.time()}).encode()
        if self.store.create(path, body):
            self._held.add(cell_key)
            return True
        holder = self.owner(cell_key)
        if holder is not None:
            if holder == self.id:
                self._held.add(cell_key)
                return True
            return False
        self.store.delete(path)  # the holder is gone: take the claim over
        if self.store.create(path, body):
            self._held.add(cell_key)
            return True
        return False

    def claim_many(self, keys: list[str], threads: int = 16) -> list[str]:
        """:meth:`claim` every key, ``threads`` at a time (one store round trip each: on S3 a 10,000-cell grid
        would otherwise spend minutes claiming); the keys claimed, in order."""
        if len(keys) < 2 * threads:
            return [k for k in keys if self.claim(k)]
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sragu-claim") as pool:
            won = list(pool.map(self.claim, keys))
        return [k for k, ok in zip(keys, won) if ok]

    def release_later(self, cell_key: str) -> None:
        """:meth:`release` on a background thread: the grid's loop does not wait for the store's two round
        trips.  Leaving the context waits for every release."""
        if cell_key not in self._held:
            return
        if self._releaser is None:
            self._releaser = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sragu-release")
        self._releaser.submit(self.release, cell_key)

    def release(self, cell_key: str) -> None:
        if cell_key not in self._held:
            return
        self._held.discard(cell_key)
        try:
            rec = self.store.get_json(self._path(cell_key))
            if rec.get("driver") == self.id:
                self.store.delete(self._path(cell_key))
        except Exception:  # noqa: BLE001, S110 — an unreleased claim lapses with this driver's heartbeat
            pass

    @staticmethod
    def _path(cell_key: str) -> str:
        return f"leases/cells/{cell_key}.json"
