"""Distributed search with a worker that dies (issue 15): heartbeats, the chief's watchdog that
gives up the dead worker's trial, and the chief listening on loopback unless told otherwise."""

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras_tuner
import pytest

from recipes.cli.tune import DEFAULT_HOST, _set_role, exposure
from recipes.run import RunFolder, _process_start
from recipes.tuning.heartbeat import (
    HEARTBEAT_DIR,
    Heartbeat,
    Watchdog,
    dead_workers,
    release_worker,
)

HOST = socket.gethostname()


def beat(project, tuner_id, pid, beat=1, host=HOST, done=False):
    RunFolder(project / HEARTBEAT_DIR).write_json(f"{tuner_id}.json", {
        "tuner_id": tuner_id, "pid": pid, "host": host, "started": _process_start(pid),
        "beat": beat, "done": done, "time": 0})


_UNREAPED = []  # keeps zombies from being reaped by subprocess' clean-up


def gone_pid(reap=True):
    """The pid of a process that exited (left a zombie, not yet reaped, when not `reap`)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    if reap:
        proc.wait()
    else:
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        _UNREAPED.append(proc)
    return proc.pid


def test_dead_workers_from_their_heartbeats(tmp_path):
    beat(tmp_path, "alive", os.getpid())
    beat(tmp_path, "killed", gone_pid())
    beat(tmp_path, "zombie", gone_pid(reap=False))  # killed, its parent not told yet
    beat(tmp_path, "remote", 1, host="elsewhere")
    beat(tmp_path, "finished", os.getpid(), done=True)
    seen = {}
    ids = ["alive", "killed", "zombie", "remote", "finished", "no_file"]
    dead = dead_workers(tmp_path, ids, seen, now=1000.0, timeout=60)
    assert sorted(dead) == ["finished", "killed", "zombie"]  # the others: alive, or not judged (no file)
    assert "killed" in dead["killed"] and "gone" in dead["killed"]
    assert dead_workers(tmp_path, ["remote"], seen, now=1059.0, timeout=60) == {}
    beat(tmp_path, "remote", 1, host="elsewhere", beat=2)  # a new beat: the clock restarts
    assert dead_workers(tmp_path, ["remote"], seen, now=1100.0, timeout=60) == {}
    late = dead_workers(tmp_path, ["remote"], seen, now=1161.0, timeout=60)
    assert "no heartbeat for 61 s" in late["remote"]


def test_heartbeat_beats_in_the_background_and_says_when_it_is_done(tmp_path):
    with Heartbeat(tmp_path, "worker0", interval=0.05):
        first = RunFolder(tmp_path / HEARTBEAT_DIR).read_json("worker0.json")
        time.sleep(0.3)
        later = RunFolder(tmp_path / HEARTBEAT_DIR).read_json("worker0.json")
    assert later["beat"] > first["beat"] and first["pid"] == os.getpid()
    assert RunFolder(tmp_path / HEARTBEAT_DIR).read_json("worker0.json")["done"] is True


def _oracle(tmp_path, retries=0):
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", 1e-3, 1e-1, sampling="log")
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective="val_accuracy", max_trials=4, hyperparameters=hp, seed=1,
        max_retries_per_trial=retries)
    oracle._set_project_dir(str(tmp_path), "project")
    return oracle


def exit_chief(oracle):
    """When KerasTuner's chief stops serving (`oracle_chief.exit_chief`, private there)."""
    return not oracle.ongoing_trials and not oracle.tuner_ids


def test_watchdog_gives_up_a_dead_workers_trial_and_forgets_the_worker(tmp_path, capsys):
    oracle = _oracle(tmp_path)
    project = tmp_path / "project"
    dead_trial = oracle.create_trial("worker1")
    live_trial = oracle.create_trial("worker0")
    beat(project, "worker0", os.getpid())
    beat(project, "worker1", gone_pid())
    watchdog = Watchdog(oracle, project, timeout=60)
    assert list(watchdog.check()) == ["worker1"]
    assert oracle.trials[dead_trial.trial_id].status == "FAILED"
    assert "worker1" in oracle.trials[dead_trial.trial_id].message
    assert set(oracle.ongoing_trials) == {"worker0"} and "worker1" not in oracle.tuner_ids
    assert f"trial {dead_trial.trial_id} given up" in capsys.readouterr().err
    # The live worker runs the remaining trials and is told to stop: nothing is left to wait for.
    trial = live_trial
    while trial.status != "STOPPED":
        assert not exit_chief(oracle)
        trial.status = "COMPLETED"
        oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
        oracle.end_trial(trial)
        trial = oracle.create_trial("worker0")
    assert exit_chief(oracle)
    saved = json.loads((project / f"trial_{dead_trial.trial_id}" / "trial.json").read_text())
    assert saved["status"] == "FAILED"  # what the results table reads


def test_a_given_up_trial_is_retried_when_retries_are_allowed(tmp_path):
    oracle = _oracle(tmp_path, retries=1)
    trial = oracle.create_trial("worker1")
    release_worker(oracle, "worker1", "worker worker1 is gone")
    assert oracle.create_trial("worker0").trial_id == trial.trial_id  # handed to another worker


def test_watchdog_tells_once_about_a_worker_it_cannot_see(tmp_path, capsys):
    oracle = _oracle(tmp_path)
    oracle.create_trial("worker7")
    watchdog = Watchdog(oracle, tmp_path / "project")
    assert watchdog.check() == {} and watchdog.check() == {}
    err = capsys.readouterr().err
    assert err.count("no heartbeat from worker7") == 1 and "shared" in err


# ------------------------------------------------------------------ 11. where the chief listens


def _args(**kw):
    base = dict(chief=True, worker=None, host=None, port=8000, chief_address=None)
    return argparse.Namespace(**{**base, **kw})


def test_chief_binds_loopback_by_default_and_warns_on_public_addresses(monkeypatch, capsys):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    assert _set_role(_args()) == "chief"
    assert os.environ["KERASTUNER_ORACLE_IP"] == DEFAULT_HOST == "127.0.0.1"
    assert capsys.readouterr().err == ""
    _set_role(_args(host="0.0.0.0"))
    err = capsys.readouterr().err
    assert "warning" in err and "0.0.0.0:8000" in err and "every network interface" in err
    assert exposure("10.1.2.3") is None and exposure("localhost") is None
    assert exposure("8.8.8.8") == "a public address"
    with pytest.raises(ValueError, match="--host goes with --chief"):
        _set_role(_args(chief=False, port=None, host="10.0.0.1"))  # a host, but no role
    with pytest.raises(ValueError, match="--host goes with --chief"):
        _set_role(_args(chief=False, port=None, host="h", worker="1", chief_address="h:1"))


# ------------------------------------------------------------------ on loopback

SPACE = {
    "optimizer": "sgd", "image_size": 32, "batch_size": 64, "augmentation": None,
    "schedule": "constant", "dropout": 0.2, "l2": 0.0, "label_smoothing": 0.0,
    "learning_rate": {"min": 0.01, "max": 0.1, "sampling": "log"},
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ongoing(project):
    try:
        return json.loads((project / "oracle.json").read_text()).get("ongoing_trials", {})
    except (OSError, ValueError):
        return {}


@pytest.mark.slow  # ~2 minutes: three processes, several trials
def test_killed_worker_does_not_hang_the_chief(tmp_path):
    pytest.importorskip("grpc", reason="KerasTuner's distributed mode needs grpcio")
    port, project = _free_port(), tmp_path / "dist"
    common = [
        sys.executable, "-m", "recipes.cli", "tune", "--backbones", "mobilenet", "--alpha", "0.25",
        "--tuner", "random", "--max-trials", "3", "--max-epochs", "1",
        "--search-space", json.dumps(SPACE), "--directory", str(tmp_path), "--project", "dist",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", RECIPES_HEARTBEAT_SECONDS="1")
    commands = {
        "chief": common + ["--chief", "--port", str(port)],  # default host: 127.0.0.1
        "worker0": common + ["--worker", "0", "--chief-address", f"127.0.0.1:{port}"],
        "worker1": common + ["--worker", "1", "--chief-address", f"127.0.0.1:{port}"],
    }
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env)
             for name, cmd in commands.items()}
    try:
        deadline = time.time() + 240
        while "worker1" not in _ongoing(project):  # worker1 is running a trial: kill it
            assert time.time() < deadline, "worker1 never started a trial"
            assert procs["worker1"].poll() is None
            time.sleep(0.5)
        killed_trial = _ongoing(project)["worker1"]
        procs["worker1"].send_signal(signal.SIGKILL)
        outputs = {name: procs[name].communicate(timeout=300)[0] for name in ("worker0", "chief")}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert procs["chief"].returncode == 0, outputs["chief"][-3000:]
    assert procs["worker0"].returncode == 0, outputs["worker0"][-3000:]
    assert "worker worker1" in outputs["chief"] and "is gone (killed?)" in outputs["chief"]
    with open(project / "results.csv") as f:
        rows = {r["trial"]: r for r in csv.DictReader(f)}
    assert rows[killed_trial]["status"] == "FAILED" and "worker1" in rows[killed_trial]["message"]
    others = [r for t, r in rows.items() if t != killed_trial]
    assert len(rows) == 3 and all(r["status"] == "COMPLETED" for r in others)
