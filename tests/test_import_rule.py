"""docs/design.md §10: the algorithm core never imports orchestration or I/O libraries."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("ray", "mlflow", "boto3", "botocore", "pyarrow", "components", "pipelines")


def test_sragu_core_imports_stay_pure():
    modules = [p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
               for p in (ROOT / "sragu_core").rglob("*.py")]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(','.join(sorted(f for f in {FORBIDDEN!r} if f in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert len(modules) > 15
    assert out.stdout.strip() == "", f"sragu_core pulled in: {out.stdout.strip()}"
