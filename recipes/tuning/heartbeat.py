"""Dead-worker detection for distributed search: worker heartbeats, and a chief-side watchdog.

KerasTuner's chief waits for every worker it handed a trial to (KerasTuner #254, #344): a worker
killed during a trial leaves that trial RUNNING and the chief serving the oracle forever. Here
every worker writes a heartbeat file, `<project>/workers/<tuner_id>.json`, every few seconds from
a background thread; the chief watches the files of the workers the oracle knows. A worker whose
process is gone (same machine: its pid no longer runs) or whose heartbeat stopped changing for
`worker_timeout()` seconds (the chief's clock: no clock skew between machines matters) is dead:
its trial is ended as INVALID (KerasTuner retries it when `max_retries_per_trial` allows, else it
is FAILED, with a message naming the worker) and the worker is forgotten, so the chief finishes.

The heartbeats need the `directory` shared between the chief and the workers, as
`best_model()` does; the chief says once about each worker it cannot see that a dead one cannot be
detected.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

from ..run import RunFolder, _process_alive, _process_start

__all__ = [
    "HEARTBEAT_DIR", "Heartbeat", "Watchdog", "dead_workers", "heartbeat_seconds",
    "release_worker", "worker_timeout",
]

#: Folder of the project that holds one heartbeat file per worker.
HEARTBEAT_DIR = "workers"


def heartbeat_seconds() -> float:
    """Seconds between heartbeats (`RECIPES_HEARTBEAT_SECONDS`, default 5)."""
    return float(os.environ.get("RECIPES_HEARTBEAT_SECONDS", 5))


def worker_timeout() -> float:
    """Seconds without a new heartbeat after which a worker counts as dead
    (`RECIPES_WORKER_TIMEOUT`, default 120: a worker busy tracing still beats every few seconds)."""
    return float(os.environ.get("RECIPES_WORKER_TIMEOUT", 120))


def _folder(project_dir) -> RunFolder:
    return RunFolder(Path(project_dir) / HEARTBEAT_DIR)


class Heartbeat:
    """A worker's heartbeat: `<project>/workers/<tuner_id>.json`, rewritten every `interval`.

    Args:
        project_dir: The (shared) project folder.
        tuner_id: The worker's KerasTuner id.
        interval: Seconds between beats (default `heartbeat_seconds()`).

    Example:
        >>> with Heartbeat("tuning/digits_random", "worker0"):
        ...     tuner.search()
    """

    def __init__(self, project_dir, tuner_id, interval=None):
        self.folder = _folder(project_dir)
        self.name = f"{tuner_id}.json"
        self.interval = heartbeat_seconds() if interval is None else float(interval)
        self.info = {"tuner_id": tuner_id, "pid": os.getpid(), "host": socket.gethostname(),
                     "started": _process_start(os.getpid()), "beat": 0, "done": False}
        self._stop = threading.Event()
        self._thread = None

    def beat(self, done=False):
        self.info.update(beat=self.info["beat"] + 1, time=time.time(), done=done)
        try:
            self.folder.write_json(self.name, self.info)
        except OSError:
            pass  # a full or unreachable disk must not stop the trials; the chief will notice

    def _run(self):
        while not self._stop.wait(self.interval):
            self.beat()

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="recipes-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
        self.beat(done=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def dead_workers(project_dir, tuner_ids, seen: dict, now=None, timeout=None) -> dict:
    """Which of `tuner_ids` are dead, from their heartbeat files: `{tuner_id: reason}`.

    Args:
        project_dir: The project folder.
        tuner_ids: The workers to judge (those the oracle knows).
        seen: The caller's memory between calls, `{tuner_id: (beat, chief time it was first
            seen)}`; updated here. A heartbeat is judged on the chief's clock only.
        now: The chief's time (default `time.time()`).
        timeout: Seconds without a new beat that make a worker dead (default `worker_timeout()`).

    Returns:
        Dead workers and why. A worker without a heartbeat file is not judged (the directory may
        not be shared); one that wrote `done` while the oracle still counts it is dead.
    """
    now = time.time() if now is None else now
    timeout = worker_timeout() if timeout is None else timeout
    folder, here = _folder(project_dir), socket.gethostname()
    dead = {}
    for tuner_id in tuner_ids:
        try:
            info = folder.read_json(f"{tuner_id}.json")
        except (OSError, ValueError):
            continue
        where = f"process {info.get('pid')} on {info.get('host')}"
        if info.get("done"):
            dead[tuner_id] = f"worker {tuner_id} ({where}) stopped"
            continue
        if info.get("host") == here and not _process_alive(int(info.get("pid", -1)),
                                                          info.get("started")):
            dead[tuner_id] = f"worker {tuner_id} ({where}) is gone (killed?)"
            continue
        beat = info.get("beat")
        last, since = seen.get(tuner_id, (None, now))
        if beat != last:
            seen[tuner_id] = (beat, now)
        elif now - since > timeout:
            dead[tuner_id] = (f"worker {tuner_id} ({where}) sent no heartbeat for "
                              f"{now - since:.0f} s (killed or cut off?)")
    return dead


def release_worker(oracle, tuner_id, reason) -> str | None:
    """Ends a dead worker's trial as INVALID (KerasTuner's retry policy then retries or fails it)
    and forgets the worker, so the chief does not wait for it. Returns the trial id, if any.

    Call it holding the oracle's lock (`Watchdog` does).
    """
    trial = oracle.ongoing_trials.get(tuner_id)
    trial_id = None
    if trial is not None:
        trial_id = trial.trial_id
        trial.status = "INVALID"
        trial.message = f"{reason}; its trial {trial_id} was given up"
        try:
            oracle.end_trial(trial)
        except RuntimeError as exc:  # too many failures in a row: recorded, the chief stops
            print(f"chief: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
        oracle.ongoing_trials.pop(tuner_id, None)  # end_trial may have raised before popping it
        oracle.save()
    oracle.tuner_ids.discard(tuner_id)
    return trial_id


class Watchdog:
    """The chief's thread that releases dead workers (see the module docstring).

    Args:
        oracle: The chief's KerasTuner oracle.
        project_dir: The project folder (where the workers' heartbeats are).
        interval: Seconds between checks (default `heartbeat_seconds()`).
        timeout: See `dead_workers`.
    """

    def __init__(self, oracle, project_dir, interval=None, timeout=None):
        self.oracle, self.project_dir = oracle, Path(project_dir)
        self.interval = heartbeat_seconds() if interval is None else float(interval)
        self.timeout = timeout
        self.seen, self.released, self._unseen_told = {}, {}, set()
        self._stop = threading.Event()
        self._thread = None

    def check(self) -> dict:
        """One check: releases the dead workers; returns `{tuner_id: reason}` of those released."""
        import keras_tuner

        return keras_tuner.synchronized(_check)(self.oracle, self)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # the watchdog must never take the chief down
                print(f"chief: worker check failed: {exc}", file=sys.stderr, flush=True)

    def start(self) -> Watchdog:
        self._thread = threading.Thread(target=self._run, name="recipes-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _check(oracle, watchdog) -> dict:
    known = set(oracle.tuner_ids) | set(oracle.ongoing_trials)
    folder = _folder(watchdog.project_dir)
    for tuner_id in sorted(known - watchdog._unseen_told):
        if not folder.file(f"{tuner_id}.json").is_file():
            watchdog._unseen_told.add(tuner_id)
            print(f"chief: no heartbeat from {tuner_id} in {folder.path} (is --directory shared?); "
                  "if it dies, its trial cannot be given up", file=sys.stderr, flush=True)
    dead = dead_workers(watchdog.project_dir, sorted(known), watchdog.seen, timeout=watchdog.timeout)
    for tuner_id, reason in dead.items():
        trial_id = release_worker(oracle, tuner_id, reason)
        watchdog.released[tuner_id] = reason
        print(f"chief: {reason}" + (f"; trial {trial_id} given up" if trial_id else ""),
              file=sys.stderr, flush=True)
    return dead
