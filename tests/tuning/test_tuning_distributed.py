"""Distributed search on loopback: a chief (KerasTuner's gRPC oracle) and two worker processes,
all started through the `recipes tune` CLI, finish one search together, each trial run once."""

import csv
import json
import os
import re
import socket
import subprocess
import sys

import pytest

SPACE = {
    "optimizer": "sgd", "image_size": 32, "batch_size": 64, "augmentation": None,
    "schedule": "constant", "dropout": 0.2, "l2": 0.0, "label_smoothing": 0.0,
    "learning_rate": {"min": 0.01, "max": 0.1, "sampling": "log"},
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~60 s of three processes tracing; keeps the default suite under 6 minutes
def test_chief_and_two_workers_share_one_search(tmp_path):
    pytest.importorskip("grpc", reason="KerasTuner's distributed mode needs grpcio")
    port = _free_port()
    common = [
        sys.executable, "-m", "recipes.cli", "tune", "--backbones", "mobilenet", "--alpha", "0.25",
        "--tuner", "random", "--max-trials", "2", "--max-epochs", "1",
        "--search-space", json.dumps(SPACE), "--directory", str(tmp_path), "--project", "dist",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    commands = {
        "chief": common + ["--chief", "--host", "127.0.0.1", "--port", str(port)],
        "worker0": common + ["--worker", "0", "--chief-address", f"127.0.0.1:{port}"],
        "worker1": common + ["--worker", "1", "--chief-address", f"127.0.0.1:{port}"],
    }
    procs = {
        name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for name, cmd in commands.items()
    }
    outputs = {}
    try:
        for name, proc in procs.items():
            outputs[name] = proc.communicate(timeout=300)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} failed:\n{outputs.get(name, '')[-3000:]}"

    with open(tmp_path / "dist" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["trial"] for r in rows) == ["0", "1"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert {r["worker"] for r in rows} <= {"worker0", "worker1"}
    assert rows[0]["learning_rate"] != rows[1]["learning_rate"]
    # Every trial was run by exactly one worker, as each worker reports it.
    ran = []
    for name in ("worker0", "worker1"):
        line = re.search(rf"{name}: done; ran trial\(s\) (.*)", outputs[name]).group(1)
        ran += [] if line == "none" else line.split(", ")
    assert sorted(ran) == ["0", "1"]
    assert "val_accuracy" in outputs["chief"] and "best val_accuracy=" in outputs["chief"]
