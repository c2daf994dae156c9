"""Every kind of bad input to the two entry points, in-process: one ``error:`` line, exit 2, nothing written.

Each row is (entry point, argv, environment, files to create first, words the error line must contain).
The words are the key the user typed (``sragu.tau=``, ``--out``, ``MLFLOW_TRACKING_URI`` ...), the value
typed and a hint of what is allowed.  For every row: exit code 2 (argparse's SystemExit included), stderr
is exactly one line starting with ``error:`` that holds every word, stdout is empty, nothing was created
under the test's folder (``--out``, ``--store``, the SQLite file, the working directory) and Ray was never
started: ``ray.init`` is replaced by a tripwire, so an input that is wrongly accepted fails in
milliseconds instead of running the benchmark.

``{tmp}`` in argv, environment and files is the test's folder; ``{port}`` a port nothing listens on.
tests/test_config.py keeps a few of these as real subprocesses; this table replaces the need for more.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import importlib.util
import json
import shlex
import traceback
from pathlib import Path

import boto3
import pytest
import ray
import torch
from conftest import ROOT, free_port

NOWHERE = Path("/nonexistent-dir-xyz")  # the SQLite row must not create it
_ENTRY = {"benchmark": "pipelines/benchmark.py", "tune": "pipelines/tune.py"}
_MODULES: dict = {}
_DROP_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "RAY_ADDRESS",
             "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_PROFILE", "SRAGU_DATA_DIR")
_DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
              "AWS_EC2_METADATA_DISABLED": "true"}
_NO_AWS_CREDS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": "{tmp}/no-aws-credentials",
                 "AWS_CONFIG_FILE": "{tmp}/no-aws-config", "AWS_DEFAULT_REGION": "us-east-1"}
_TUNED = "sragu-tuned/1"


def _main(entry: str):
    """The entry point's ``main``, loaded once per session from its file (as ``python pipelines/x.py`` would)."""
    if entry not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"{entry}_main", ROOT / _ENTRY[entry])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[entry] = module
    return _MODULES[entry].main


def _tuned(**doc) -> str:
    return json.dumps({"format": _TUNED, "tuned_seed": 1000, "methods": {}, **doc})


def row(rid: str, entry: str, argv: str, words: list[str], env: dict | None = None, files: dict | None = None,
        marks=()):
    return pytest.param(entry, argv, env or {}, files or {}, words, id=rid, marks=marks)


B, T = "benchmark", "tune"
S = "--preset smoke --smoke"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a visible GPU makes device=cuda valid")
SHARED = [  # bad input both entry points take the same way
    ("preset-unknown", "--preset nope", ["preset=", "nope", "smoke"]),
    ("set-no-equals", f"{S} --set novalue", ["--set", "novalue", "KEY=VALUE"]),
    ("unknown-flag", f"{S} --bogus", ["unrecognized", "--bogus"]),
    ("store-bad-scheme", f"{S} --store ftp://x", ["store", "ftp://x", "s3://"]),
    ("out-is-a-file", S + " --out {tmp}/afile", ["--out", "afile"]),
    ("mlflow-unreachable", S, ["MLFLOW_TRACKING_URI", "127.0.0.1:{port}", "reachable"]),
    ("mlflow-sqlite-nowhere", S, ["MLFLOW_TRACKING_URI", "nonexistent-dir-xyz", "writable"]),
    ("ray-address-garbage", f"{S} --set ray.address=garbage", ["ray.address=", "garbage", "host:port"]),
    ("ray-address-closed-port", S + " --set ray.address=127.0.0.1:{port}",
     ["ray.address=", "127.0.0.1:{port}", "reachable"]),
    ("ray-address-env-garbage", S, ["RAY_ADDRESS", "garbage"]),
    ("tau-negative", f"{S} --set sragu.tau=-1", ["sragu.tau=", "-1", "> 0"]),
    ("regime-class-11", f"{S} --set regimes=[class:11]", ["regimes=", "class:11", "[0, 9]"]),
    ("name-with-slash", f"{S} --set name=a/b", ["name=", "a/b"]),
]
_SHARED_ENV = {
    "out-is-a-file": ({}, {"afile": "x"}),
    "mlflow-unreachable": ({"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"}, {}),
    "mlflow-sqlite-nowhere": ({"MLFLOW_TRACKING_URI": f"sqlite:///{NOWHERE}/sub/x.db"}, {}),
    "ray-address-env-garbage": ({"RAY_ADDRESS": "garbage"}, {}),
}

ROWS = [
    *(row(f"{e}-{rid}", e, argv, words, *_SHARED_ENV.get(rid, ({}, {}))) for e in (B, T)
      for rid, argv, words in SHARED),
    # ---------------------------------------------------------------- benchmark: unknown keys and sections
    row("set-unknown-top-key", B, f"{S} --set nope=1", ["nope=", "1", "BenchmarkConfig"]),
    row("set-unknown-method-key", B, f"{S} --set sragu.nope=1", ["sragu.nope=", "1", "tau"]),
    row("set-whole-method", B, f"{S} --set sragu=1", ["sragu=", "1", "sragu.<field>"]),
    row("set-whole-section", B, f"{S} --set train=1", ["train=", "1", "TrainConfig"]),
    row("set-subkey-of-scalar", B, f"{S} --set train.lr.x=1", ["train.lr.x=", "no sub-keys"]),
    row("set-empty-key", B, f"{S} --set =1", ["--set", "=1", "KEY=VALUE"]),
    row("set-blank-key", B, S + " --set ' =1'", ["--set", "=1", "KEY=VALUE"]),
    # ---------------------------------------------------------------- wrong types
    row("seeds-word", B, f"{S} --set seeds=x", ["seeds=", "x", "integer"]),
    row("seeds-float", B, f"{S} --set seeds=[1.5]", ["seeds=", "1.5", "integer"]),
    row("seeds-unclosed-list", B, f"{S} --set seeds=[0,", ["seeds=", "[0,", "list"]),
    row("lr-word", B, f"{S} --set train.lr=abc", ["train.lr=", "abc", "number"]),
    row("download-maybe", B, f"{S} --set data.download=maybe", ["data.download=", "maybe", "true or false"]),
    row("max-in-flight-float", B, f"{S} --set ray.max_in_flight=1.5", ["ray.max_in_flight=", "1.5", "integer"]),
    row("omega-map-unknown", B, f"{S} --set sragu.omega_map=bogus", ["sragu.omega_map=", "bogus", "gaussian"]),
    # ---------------------------------------------------------------- out of range, non-finite
    row("tau-inf", B, f"{S} --set sragu.tau=inf", ["sragu.tau=", "inf", "finite"]),
    row("tau-nan", B, f"{S} --set sragu.tau=nan", ["sragu.tau=", "nan", "finite"]),
    row("omega-min-above-max", B, f"{S} --set sragu.omega_min=0.9 --set sragu.omega_max=0.5",
        ["sragu.omega_min=", "0.9"]),
    row("agu-eta-zero", B, f"{S} --set agu.eta=0", ["agu.eta=", "0", "> 0"]),
    row("lr-zero", B, f"{S} --set train.lr=0", ["train.lr=", "0", "> 0"]),
    row("momentum-one", B, f"{S} --set train.momentum=1", ["train.momentum=", "1", "[0, 1)"]),
    row("batch-size-zero", B, f"{S} --set train.batch_size=0", ["train.batch_size=", "0", ">= 1"]),
    row("epochs-mlp-zero", B, f"{S} --set epochs.mlp=0", ["epochs.mlp=", "0", ">= 1"]),
    row("val-fraction-2", B, f"{S} --set data.val_fraction=2", ["data.val_fraction=", "2", "between 0 and 1"]),
    row("val-fraction-0", B, f"{S} --set data.val_fraction=0", ["data.val_fraction=", "0", "between 0 and 1"]),
    row("val-plus-test-fraction", B, f"{S} --set data.test_fraction=0.95", ["data.test_fraction=", "0.95"]),
    row("test-fraction-official-split", B, f"{S} --set datasets=[mnist] --set data.test_fraction=0.2",
        ["data.test_fraction=", "0.2", "official test split"]),
    row("split-seed-negative", B, f"{S} --set data.split_seed=-1", ["data.split_seed=", "-1", "non-negative"]),
    row("max-train-5", B, f"{S} --set data.max_train=5", ["data.max_train=", "5", ">= 20"]),
    row("data-dir-empty", B, S + " --set datasets=[mnist] --set data.data_dir={tmp}/nodata",
        ["data.data_dir=", "nodata", "directory"]),
    row("data-dir-env-empty", B, f"{S} --set datasets=[mnist]", ["SRAGU_DATA_DIR", "nodata"],
        env={"SRAGU_DATA_DIR": "{tmp}/nodata"}),
    row("ray-num-cpus-0", B, f"{S} --set ray.num_cpus=0", ["ray.num_cpus=", "0", ">= 1"]),
    row("ray-max-in-flight-0", B, f"{S} --set ray.max_in_flight=0", ["ray.max_in_flight=", "0", ">= 1"]),
    row("ray-max-retries-neg", B, f"{S} --set ray.max_retries=-1", ["ray.max_retries=", "-1", ">= 0"]),
    row("ray-stall-timeout-neg", B, f"{S} --set ray.stall_timeout_s=-1", ["ray.stall_timeout_s=", "-1", ">= 0"]),
    row("ray-lease-ttl-1", B, f"{S} --set ray.lease_ttl_s=1", ["ray.lease_ttl_s=", "1", ">= 5"]),
    row("ray-cell-cpus-0", B, f"{S} --set ray.cell.num_cpus=0", ["ray.cell.num_cpus=", "0", "> 0"]),
    row("ray-cell-gpus-neg", B, f"{S} --set ray.cell.num_gpus=-1", ["ray.cell.num_gpus=", "-1", ">= 0"]),
    row("ray-train-memory-neg", B, f"{S} --set ray.train.memory_mb=-1", ["ray.train.memory_mb=", "-1", ">= 0"]),
    row("mlp-hidden-zero", B, f"{S} --set model.mlp_hidden=[0]", ["model.mlp_hidden=", "positive"]),
    row("device-tpu", B, f"{S} --set device=tpu", ["device=", "tpu", "cpu"]),
    row("device-cuda-without-gpu", B, f"{S} --set device=cuda", ["device=", "cuda", "cpu"], marks=NO_CUDA),
    # ---------------------------------------------------------------- lists
    row("seeds-duplicate", B, f"{S} --set seeds=[0,0]", ["seeds=", "distinct"]),
    row("seeds-empty", B, f"{S} --set seeds=[]", ["seeds=", "one or more"]),
    row("methods-empty", B, f"{S} --set methods=[]", ["methods=", "one or more"]),
    row("methods-unknown", B, f"{S} --set methods=[agu,unknown]", ["methods=", "unknown", "sragu"]),
    row("methods-duplicate", B, f"{S} --set methods=[agu,agu]", ["methods=", "distinct"]),
    row("datasets-unknown", B, f"{S} --set datasets=[imagenet]", ["datasets=", "imagenet", "mnist_5k"]),
    row("datasets-empty", B, f"{S} --set datasets=[]", ["datasets=", "at least one"]),
    row("models-unknown", B, f"{S} --set models=[vgg]", ["models=", "vgg", "mlp"]),
    row("models-bare-word", B, f"{S} --set models=vgg", ["models=", "vgg", "mlp"]),
    row("model-name-unknown", B, f"{S} --set model.name=vgg", ["model.name=", "vgg", "mlp"]),
    # ---------------------------------------------------------------- regimes
    row("regimes-duplicate", B, f"{S} --set regimes=[random:0.1,random:0.1]", ["regimes=", "distinct"]),
    row("regimes-empty", B, f"{S} --set regimes=[]", ["regimes=", "at least one"]),
    row("regime-random-0", B, f"{S} --set regimes=[random:0]", ["regimes=", "random:0", "(0, 1)"]),
    row("regime-random-1.5", B, f"{S} --set regimes=[random:1.5]", ["regimes=", "random:1.5", "(0, 1)"]),
    row("regime-random-word", B, f"{S} --set regimes=[random:abc]", ["regimes=", "random:abc", "<fraction"]),
    row("regime-random-bare", B, f"{S} --set regimes=[random]", ["regimes=", "random", "<fraction"]),
    row("regime-random-extra", B, f"{S} --set regimes=[random:0.1:2]", ["regimes=", "random:0.1:2", "<fraction"]),
    row("regime-unknown", B, f"{S} --set regimes=[bogus:0.1]", ["regimes=", "bogus:0.1", "random"]),
    row("regime-class-word", B, f"{S} --set regimes=[class:x]", ["regimes=", "class:x", "class:<c>"]),
    row("regime-class-negative", B, f"{S} --set regimes=[class:-1]", ["regimes=", "class:-1", "class:<c>"]),
    row("regime-class-range-11", B, f"{S} --set regimes=[class:3-11]", ["regimes=", "class:3-11", "[0, 9]"]),
    row("regime-concentrated-short", B, f"{S} --set regimes=[class_concentrated:3]",
        ["regimes=", "class_concentrated:3", "<neighbour fraction>"]),
    row("regime-concentrated-zero", B, f"{S} --set regimes=[class_concentrated:3:0]",
        ["regimes=", "class_concentrated:3:0", "(0, 1]"]),
    row("regime-concentrated-class-11", B, f"{S} --set regimes=[class_concentrated:11:0.5]",
        ["regimes=", "class_concentrated:11:0.5", "[0, 9]"]),
    # ---------------------------------------------------------------- dead keys
    row("dead-train-epochs", B, f"{S} --set train.epochs=3", ["train.epochs=", "3", "epochs.mlp"]),
    row("dead-model-name", B, f"{S} --set model.name=mlp_deep", ["model.name=", "mlp_deep", "models=[mlp_deep]"]),
    row("dead-retrain-lr", B, f"{S} --set retrain.lr=0.1", ["retrain.lr=", "0.1", "train.*"]),
    row("dead-retrain-indep-epochs", B, f"{S} --set retrain_indep.epochs=3", ["retrain_indep.epochs=", "train.*"]),
    # ---------------------------------------------------------------- argparse
    row("positional-argument", B, f"{S} smoke", ["unrecognized", "smoke"]),
    row("flag-without-value", B, "--preset", ["--preset", "expected one argument"]),
    row("ambiguous-flag", B, f"{S} --s x", ["--s", "ambiguous"]),
    row("tune-flag-on-benchmark", B, f"{S} --resume", ["unrecognized", "--resume"]),
    # ---------------------------------------------------------------- artifact store
    row("store-bucket-too-short", B, f"{S} --store s3://A", ["store", "s3://A", "bucket"]),
    row("store-prefix-dotdot", B, f"{S} --store s3://sragu-test/../x", ["store", "../x", "relative"]),
    row("store-s3-unreachable", B, f"{S} --store s3://sragu-test",
        ["store", "s3://sragu-test", "127.0.0.1:{port}", "AWS_ENDPOINT_URL"],
        env={**_DUMMY_AWS, "AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}),
    row("store-s3-endpoint-not-a-url", B, f"{S} --store s3://sragu-test", ["AWS_ENDPOINT_URL", "not a url"],
        env={**_DUMMY_AWS, "AWS_ENDPOINT_URL": "not a url"}),
    row("store-s3-no-credentials", B, f"{S} --store s3://sragu-test",
        ["store", "s3://sragu-test", "AWS_ACCESS_KEY_ID"],
        env={**_NO_AWS_CREDS, "AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}),
    row("store-is-a-file", B, S + " --store {tmp}/afile", ["store", "afile", "folder"], files={"afile": "x"}),
    row("store-below-a-file", B, S + " --store {tmp}/afile/sub", ["store", "afile", "folder"],
        files={"afile": "x"}),
    # ---------------------------------------------------------------- MLflow tracking store
    row("mlflow-bogus-scheme", B, S, ["MLFLOW_TRACKING_URI", "bogus://x"], env={"MLFLOW_TRACKING_URI": "bogus://x"}),
    row("mlflow-sqlite-below-a-file", B, S, ["MLFLOW_TRACKING_URI", "afile"],
        env={"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/afile/x.db"}, files={"afile": "x"}),
    row("mlflow-sqlite-not-a-database", B, S, ["MLFLOW_TRACKING_URI", "junk.db"],
        env={"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/junk.db"}, files={"junk.db": "not a database " * 100}),
    # ---------------------------------------------------------------- --tuned
    row("tuned-missing", B, S + " --tuned {tmp}/missing.json", ["--tuned", "missing.json", "readable"]),
    row("tuned-a-folder", B, S + " --tuned {tmp}/folder", ["--tuned", "folder", "readable"], files={"folder": None}),
    row("tuned-not-json", B, S + " --tuned {tmp}/bad.json", ["--tuned", "bad.json", "JSON"],
        files={"bad.json": "{not json"}),
    row("tuned-wrong-format", B, S + " --tuned {tmp}/t.json", ["--tuned", "t.json", _TUNED],
        files={"t.json": json.dumps({"a": 1})}),
    row("tuned-a-list", B, S + " --tuned {tmp}/t.json", ["--tuned", "t.json", _TUNED],
        files={"t.json": "[1, 2]"}),
    row("tuned-no-seed", B, S + " --tuned {tmp}/t.json", ["--tuned", "t.json", "tuned_seed"],
        files={"t.json": json.dumps({"format": _TUNED, "methods": {}})}),
    row("tuned-unknown-method", B, S + " --tuned {tmp}/t.json", ["--tuned", "bogus", "sragu"],
        files={"t.json": _tuned(methods={"bogus": {"config": {}}})}),
    row("tuned-no-methods", B, S + " --tuned {tmp}/t.json", ["--tuned", "t.json", "methods"],
        files={"t.json": json.dumps({"format": _TUNED, "tuned_seed": 1000})}),
    row("tuned-entry-not-a-mapping", B, S + " --tuned {tmp}/t.json", ["--tuned", "t.json", "config"],
        files={"t.json": _tuned(methods={"sragu": 5})}),
    row("tuned-unknown-field", B, S + " --tuned {tmp}/t.json", ["--tuned", "t.json", "sragu.nope"],
        files={"t.json": _tuned(methods={"sragu": {"config": {"nope": 1}}})}),
    row("tuned-bad-value", B, S + " --tuned {tmp}/t.json", ["--tuned", "t.json", "sragu.tau", "-1"],
        files={"t.json": _tuned(methods={"sragu": {"config": {"tau": -1}}})}),
    row("tuned-seed-is-every-seed", B, S + " --tuned {tmp}/t.json", ["seeds", "0", "tuning seed"],
        files={"t.json": _tuned(tuned_seed=0)}),
    row("tuned-bad-protocol", B, S + " --tuned {tmp}/t.json", ["--tuned", "t.json", "protocol", "both", "shared"],
        files={"t.json": _tuned(protocol="both")}),
    # ---------------------------------------------------------------- tune: --tune settings
    row("tune-trials-0", T, f"{S} --tune trials=0", ["tune.trials=", "0", ">= 1"]),
    row("tune-trials-word", T, f"{S} --tune trials=abc", ["tune.trials=", "abc", "integer"]),
    row("tune-unknown-key", T, f"{S} --tune nope=1", ["tune.nope=", "1", "TuneSettings"]),
    row("tune-no-equals", T, f"{S} --tune trials", ["--tune", "trials", "KEY=VALUE"]),
    row("tune-methods-unknown", T, f"{S} --tune methods=[unknown]", ["tune.methods=", "unknown", "sragu"]),
    row("tune-methods-gold", T, f"{S} --tune methods=[retrain]", ["tune.methods=", "retrain", "unlearning"]),
    row("tune-methods-empty", T, f"{S} --tune methods=[]", ["tune.methods=", "one or more"]),
    row("tune-methods-duplicate", T, f"{S} --tune methods=[sragu,sragu]", ["tune.methods=", "distinct"]),
    row("tune-objective-bogus", T, f"{S} --tune objective=bogus", ["tune.objective=", "bogus", "kl_to_gold"]),
    row("tune-penalty-negative", T, f"{S} --tune penalty=-1", ["tune.penalty=", "-1", ">= 0"]),
    row("tune-penalty-nan", T, f"{S} --tune penalty=nan", ["tune.penalty=", "nan", "finite"]),
    row("tune-drop-tolerance-1", T, f"{S} --tune drop_tolerance=1", ["tune.drop_tolerance=", "1", "[0, 1)"]),
    row("tune-penalty-split", T, f"{S} --tune penalty_split=train", ["tune.penalty_split=", "train", "val"]),
    row("tune-max-concurrent-0", T, f"{S} --tune max_concurrent=0", ["tune.max_concurrent=", "0", ">= 1"]),
    row("tune-grace-period-0", T, f"{S} --tune grace_period=0", ["tune.grace_period=", "0", ">= 1"]),
    row("tune-reduction-factor-1", T, f"{S} --tune reduction_factor=1", ["tune.reduction_factor=", "1", ">= 2"]),
    row("tune-trial-cpus-0", T, f"{S} --tune trial.num_cpus=0", ["tune.trial.num_cpus=", "0", "> 0"]),
    row("tune-protocol-bogus", T, f"{S} --tune protocol=both", ["tune.protocol=", "both", "shared", "ablation"]),
    # ---------------------------------------------------------------- tune: --space
    row("space-lo-above-hi", T, f"{S} --space sragu.tau=3:0.5", ["--space", "sragu.tau", "3:0.5", "low < high"]),
    row("space-unknown-field", T, f"{S} --space sragu.nope=0:1", ["--space", "sragu.nope", "tau"]),
    row("space-unknown-method", T, f"{S} --space unknown.tau=0:1", ["--space", "unknown.tau", "sragu"]),
    row("space-not-a-range", T, f"{S} --space sragu.tau=abc", ["--space", "sragu.tau", "abc", "lo:hi"]),
    row("space-three-numbers", T, f"{S} --space sragu.tau=0:1:2", ["--space", "sragu.tau", "0:1:2", "lo:hi"]),
    row("space-no-equals", T, f"{S} --space sragu.tau", ["--space", "sragu.tau", "KEY=VALUE"]),
    row("space-log-from-zero", T, f"{S} --space sragu.tau=log:0:1", ["--space", "sragu.tau", "low > 0"]),
    row("space-int-float-bound", T, f"{S} --space sragu.max_iters=int:1.5:3",
        ["--space", "sragu.max_iters", "1.5", "integer"]),
    row("space-infinite-bound", T, f"{S} --space sragu.tau=0:inf", ["--space", "sragu.tau", "inf", "finite"]),
    row("space-bad-choice", T, f"{S} --space sragu.omega_map=bogus,gaussian",
        ["--space", "sragu.omega_map", "bogus"]),
    row("space-method-not-tuned", T, f"{S} --tune methods=[sragu] --space agu.eta=0.001:0.1",
        ["--space", "agu.eta", "tune.methods"]),
    row("space-gold-method", T, f"{S} --space retrain.lr=0.001:0.1", ["--space", "retrain.lr", "tune.methods"]),
    row("space-own-knob-under-shared", T, f"{S} --space sragu.tau=0.5:3",
        ["--space", "sragu.tau", "0.5:3", "tune.protocol=shared", "eta, max_iters", "protocol=ablation"]),
    row("space-no-shared-knob", T, f"{S} --tune methods=[ssd] --space ssd.alpha=log:1:10",
        ["--space", "ssd.alpha", "log:1:10", "(none)", "protocol=ablation"]),
    row("space-vector-log", T, f"{S} --tune protocol=ablation --tune methods=[agu_layerwise] "
        "--space agu_layerwise.layer_steps=log:0.1:1", ["--space", "agu_layerwise.layer_steps", "log:0.1:1", "lo:hi"]),
    row("space-vector-negative", T, f"{S} --tune protocol=ablation --tune methods=[agu_layerwise] "
        "--space agu_layerwise.layer_steps=-1:1", ["--space", "agu_layerwise.layer_steps", "-1:1", ">= 0"]),
    # ---------------------------------------------------------------- tune: --resume / --fresh
    row("resume-and-fresh", T, f"{S} --resume --fresh", ["--resume", "--fresh"]),
    row("resume-without-state", T, f"{S} --resume", ["--resume", "state"]),
    row("state-found-no-choice", T, S + " --store {tmp}/store", ["--resume", "--fresh"],
        files={"store/tune/tune-smoke-smoke-s1000-sragu/tuner.pkl": "x"}),
    row("resume-state-without-record", T, S + " --resume --store {tmp}/store", ["--resume", "no record", "--fresh"],
        files={"store/tune/tune-smoke-smoke-s1000-sragu/tuner.pkl": "x"}),
    # ---------------------------------------------------------------- tune: flags and stores
    row("benchmark-flag-on-tune", T, f"{S} --tuned x.json", ["unrecognized", "--tuned"]),
    row("tune-store-bucket-too-short", T, f"{S} --store s3://A", ["store", "s3://A", "bucket"]),
    row("tune-store-s3-unreachable", T, f"{S} --store s3://sragu-test",
        ["store", "s3://sragu-test", "127.0.0.1:{port}", "AWS_ENDPOINT_URL"],
        env={**_DUMMY_AWS, "AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}),
    row("tune-set-regimes-empty", T, f"{S} --set regimes=[]", ["regimes=", "at least one"]),
    row("tune-set-dead-key", T, f"{S} --set train.epochs=3", ["train.epochs=", "3", "epochs.mlp"]),
]


class RayStarted(BaseException):
    """Raised by the ``ray.init`` tripwire: the input was accepted and the run got as far as starting Ray."""


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A clean environment (restored whole afterwards: the code under test may set variables), a working
    directory inside the test's folder, and ``ray.init`` replaced by a tripwire; yields the tripwire's calls."""
    saved = dict(os.environ)
    for k in _DROP_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    calls = []

    def tripwire(*args, **kwargs):
        calls.append(kwargs)
        raise RayStarted(f"ray.init(address={kwargs.get('address')!r})")

    monkeypatch.setattr(ray, "init", tripwire)
    # boto3's default session caches the credentials it found first; a fresh process would look again
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    yield calls
    os.environ.clear()
    os.environ.update(saved)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("entry, argv, env, files, words", ROWS)
def test_bad_input_is_one_error_line_exit_2_and_no_trace(entry, argv, env, files, words, tmp_path, sandbox,
                                                        monkeypatch, capfd):
    main = _main(entry)
    port = str(free_port())
    fill = lambda s: s.replace("{tmp}", str(tmp_path)).replace("{port}", port)
    for name, content in files.items():
        path = tmp_path / fill(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if content is None else path.write_text(content)
    for k, v in env.items():
        monkeypatch.setenv(k, fill(v))
    args = [fill(a) for a in shlex.split(argv)]
    out = tmp_path / "out"
    if "--out" not in args:
        args += ["--out", str(out)]
    words = [fill(w) for w in words]
    before = _tree(tmp_path)
    capfd.readouterr()  # whatever loading the entry point printed is not this row's output

    crash = None
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    except RayStarted as e:
        code, crash = "accepted", f"the input was accepted: it reached {e}"
    except Exception as e:  # noqa: BLE001 — at the command line this is a traceback and exit code 1
        code, crash = 1, "traceback: " + "".join(traceback.format_exception_only(type(e), e)).strip()
    stdout, stderr = capfd.readouterr()
    ray_started = ray.is_initialized() or bool(sandbox)  # the tripwire was hit, or Ray runs anyway
    new = sorted(_tree(tmp_path) - before - ({"out"} if out.is_dir() and not any(out.iterdir()) else set()))

    actual = (f"exit={code}; stderr={stderr[:300]!r}; stdout={stdout[:300]!r}"
              + (f"; {crash[:300]}" if crash else "") + (f"; new files {new}" if new else "")
              + ("; ray.init was called" if ray_started else "") + (f"; {NOWHERE} created" if NOWHERE.exists() else ""))
    lines = stderr.splitlines()
    assert code == 2, actual
    assert len(lines) == 1 and lines[0].startswith("error:"), actual
    missing = [w for w in words if w not in lines[0]]
    assert not missing, f"the error line lacks {missing}: {actual}"
    assert stdout == "", actual
    assert not new, actual
    assert not ray_started, actual
    assert not NOWHERE.exists(), f"{NOWHERE} was created: {actual}"
