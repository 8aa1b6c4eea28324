"""Several workers (`recipes.distribute`): argument errors, the data split, real runs on 127.0.0.1.

The real runs start two worker processes on this machine (JAX backend, CPU, gloo collectives);
they skip cleanly when JAX is not installed.
"""

import hashlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from recipes import distribute
from recipes.cli import main

REPO = Path(__file__).resolve().parents[1]
HAS_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason='needs JAX (pip install "keras-recipes[jax]")')


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _workers(n=2):
    return ",".join(f"127.0.0.1:{p}" for p in _free_ports(n))


def _env(backend="jax"):
    """The subprocess environment: this checkout's code first, the chosen Keras backend."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["KERAS_BACKEND"] = backend
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("RECIPES_WORKERS_REEXECUTED", None)
    return env


def _run_together(commands, cwds, timeout, *, env=None, stop_when=None):
    """Starts one process per command at once; returns their (exit code, output) pairs.

    `stop_when`: a function polled every second; when it returns True, every process is
    killed (as a crash would), and their exit codes are then negative.
    """
    procs = [
        subprocess.Popen(cmd, cwd=cwd, env=env or _env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for cmd, cwd in zip(commands, cwds, strict=True)
    ]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                raise AssertionError(f"workers still running after {timeout} s")
            if stop_when is not None and stop_when():
                break
            time.sleep(1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.wait(), p.stdout.read()) for p in procs]


def _checksum(weights):
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--workers", "127.0.0.1:1234,127.0.0.1:1235"], "needs worker_index"),
        (["--workers", "127.0.0.1:1234,127.0.0.1:1235", "--worker-index", "2"], r"\[0, 2\)"),
        (["--workers", "127.0.0.1:1234,127.0.0.1:1235", "--worker-index", "-1"], r"\[0, 2\)"),
        (["--workers", "localhost", "--worker-index", "0"], "host:port"),
        (["--workers", "a:1234,:1235", "--worker-index", "0"], "host:port"),
        (["--workers", "a:0", "--worker-index", "0"], "1-65535"),
        (["--workers", "a:70000", "--worker-index", "0"], "1-65535"),
        (["--workers", "a:1,a:1", "--worker-index", "0"], "once"),
        (["--worker-index", "0"], "needs workers"),
        (["--workers", "a:1", "--worker-index", "x"], "invalid int"),
    ],
)
@pytest.mark.parametrize("command", ["train", "fine-tune"])
def test_bad_worker_flags_are_one_line_exit_2(command, args, expected, capsys):
    try:
        code = main([command, *args])
    except SystemExit as exc:  # argparse's own errors (not an int)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"recipes {command}: error: ")
    assert re.search(expected, err), err


def test_workers_without_jax_names_the_extra(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else real(name, *a))
    assert main(["train", "--workers", "127.0.0.1:1234", "--worker-index", "0"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "keras-recipes[jax]"' in err and err.count("\n") == 1


def test_python_api_refuses_workers_on_another_backend():
    import keras

    import recipes

    if keras.backend.backend() == "jax":
        pytest.skip("this process already runs on JAX")
    expected = "KERAS_BACKEND=jax" if HAS_JAX else r"keras-recipes\[jax\]"
    for verb in (recipes.train, recipes.fine_tune):
        with pytest.raises(ValueError, match=expected):  # before any data is loaded
            verb("mobilenet", "digits", workers="127.0.0.1:1234,127.0.0.1:1235", worker_index=1)
    with pytest.raises(ValueError, match="strategy"):
        recipes.train("mobilenet", "digits", workers="127.0.0.1:1", worker_index=0,
                      strategy=tf.distribute.get_strategy())


def test_parse_workers():
    assert distribute.parse_workers(" 10.0.0.1:4321, host-b:80 ") == ("10.0.0.1:4321", "host-b:80")
    assert distribute.parse_workers(["[::1]:4321"]) == ("[::1]:4321",)
    assert distribute.check_workers(None, None) is None
    assert distribute.check_workers("a:1,b:1", 1) == (("a:1", "b:1"), 1)
    for bad in ("", "a:1:2", "[]:1", "a b:1", 42, ["a:1", 3]):
        with pytest.raises(ValueError, match="workers"):
            distribute.parse_workers(bad)


def test_shard_train_splits_every_global_batch_evenly():
    ds = tf.data.Dataset.range(10).batch(4)  # 0-3, 4-7, then a partial 8-9 (dropped)
    shards = [
        distribute.Cluster(("a:1", "b:1"), i).shard_train(ds, 4, train_size=10) for i in (0, 1)
    ]
    batches = [[b.numpy().tolist() for b in s] for s in shards]
    assert batches == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]  # the same steps on each worker
    assert [int(s.cardinality()) for s in shards] == [2, 2]
    assert distribute.Cluster(("a:1", "b:1"), 0).steps_per_epoch(10, 4) == 2


# ---------------------------------------------------------------------------- real workers

_TINY_WORKER = textwrap.dedent("""
    import hashlib, json, sys
    import keras, numpy as np
    import recipes
    from recipes import distribute

    workers, index, out, report = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    distribute.connect(workers, index)  # before the model is built
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(8, 3),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax"),
    ], name="tiny")
    result = recipes.train(model, "digits", epochs=int(sys.argv[5]), workers=workers,
                           worker_index=index, out=out, verbose=0)
    digest = hashlib.sha256()
    for w in result.model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    json.dump({"checksum": digest.hexdigest(), "metrics": result.metrics,
               "run_dir": str(result.run_dir)}, open(report, "w"))
""")


def _tiny_run(tmp_path, epochs, *, timeout=300, stop_when=None):
    script = tmp_path / "worker.py"
    script.write_text(_TINY_WORKER)
    workers = _workers()
    cwds = [tmp_path / f"cwd{i}" for i in (0, 1)]
    for cwd in cwds:
        cwd.mkdir(exist_ok=True)
    commands = [[sys.executable, str(script), workers, str(i), str(tmp_path / f"run{i}"),
                 str(tmp_path / f"report{i}.json"), str(epochs)] for i in (0, 1)]
    return _run_together(commands, cwds, timeout, stop_when=stop_when)


def _reports(tmp_path):
    return [json.loads((tmp_path / f"report{i}.json").read_text()) for i in (0, 1)]


@pytest.mark.slow  # two JAX processes on loopback, ~30 s: with the other multi-process runs
@needs_jax
def test_two_workers_train_to_identical_weights_and_only_worker_0_writes(tmp_path):
    results = _tiny_run(tmp_path, epochs=1)
    for rc, output in results:
        assert rc == 0, output[-3000:]
    first, second = _reports(tmp_path)
    assert first["checksum"] == second["checksum"]  # the same model on both workers
    assert first["metrics"]["test_accuracy"] == second["metrics"]["test_accuracy"]
    run = tmp_path / "run0"
    assert first["run_dir"] == str(run) and second["run_dir"] == "None"
    assert {"model.keras", "metrics.json", "recipe.json", "history.csv"} <= {p.name for p in run.iterdir()}
    assert not (run / "backup").exists()
    assert not (tmp_path / "run1").exists()  # worker 1 was given an out folder, and ignored it
    assert not any((tmp_path / "cwd1").iterdir())


@pytest.mark.slow  # also covered by the slow two-worker CLI run; keeps the default suite < 6 min
@needs_jax
def test_cli_workers_reexecute_on_jax(tmp_path):
    # Started on TensorFlow, the command restarts itself on JAX, where the recipe check fails.
    (rc, output), = _run_together(
        [[sys.executable, "-m", "recipes.cli", "train", "--workers", _workers(1),
          "--worker-index", "0", "--epochs", "0"]],
        [tmp_path], 120, env=_env("tensorflow"),
    )
    assert rc == 2, output[-3000:]
    assert "restarting with KERAS_BACKEND=jax" in output
    assert "recipes train: error: epochs" in output


@needs_jax
@pytest.mark.slow
def test_two_workers_resume_a_killed_run_from_worker_0s_backup(tmp_path):
    metadata = tmp_path / "run0" / "backup" / "training_metadata.json"
    killed = _tiny_run(tmp_path, epochs=3, stop_when=metadata.is_file)
    assert all(rc != 0 for rc, _ in killed) and metadata.is_file()
    results = _tiny_run(tmp_path, epochs=3)  # the same command again
    for rc, output in results:
        assert rc == 0, output[-3000:]
        assert "Epoch 1/" not in output
    first, second = _reports(tmp_path)
    assert first["checksum"] == second["checksum"]
    assert first["metrics"]["epochs"] == 3  # history.csv spans both parts
    assert len((tmp_path / "run0" / "history.csv").read_text().strip().splitlines()) == 4


_CLI_WORKER = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import recipes.training as training
    from recipes.cli import main

    report, argv = sys.argv[1], sys.argv[2:]
    real_train = training.train

    def train(*args, **kwargs):  # records the final weights of this worker
        result = real_train(*args, **kwargs)
        digest = hashlib.sha256()
        for w in result.model.get_weights():
            digest.update(np.ascontiguousarray(w).tobytes())
        open(report, "w").write(digest.hexdigest())
        return result

    training.train = train
    sys.exit(main(argv))
""")


@needs_jax
@pytest.mark.slow
def test_cli_two_workers_mobilenet(tmp_path):
    """`recipes train --workers`: worker 0 started on TensorFlow (re-executes on JAX)."""
    import keras

    script = tmp_path / "worker.py"
    script.write_text(_CLI_WORKER)
    workers = _workers()
    args = ["train", "--workers", workers, "--backbone", "mobilenet", "--alpha", "0.25",
            "--image-size", "32", "--epochs", "1"]
    cwds = [tmp_path / "cwd0", tmp_path / "cwd1"]
    for cwd in cwds:
        cwd.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-m", "recipes.cli", *args, "--worker-index", "0",
                          "--out", str(tmp_path / "run0")], cwd=cwds[0], env=_env("tensorflow"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen([sys.executable, str(script), str(tmp_path / "checksum1"), *args,
                          "--worker-index", "1", "--out", str(tmp_path / "run1")], cwd=cwds[1],
                         env=_env("jax"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True),
    ]
    try:
        outputs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output[-3000:]
    assert "restarting with KERAS_BACKEND=jax" in outputs[0]
    assert "written by worker 0" in outputs[1]
    assert not (tmp_path / "run1").exists() and not any(cwds[1].iterdir())
    run = tmp_path / "run0"
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1
    # Worker 0's saved model (reloaded here, on this process's backend) is worker 1's model.
    model = keras.models.load_model(run / "model.keras")
    assert _checksum(model.get_weights()) == (tmp_path / "checksum1").read_text()
