"""Training on several machines: Keras' own multi-process data parallelism on the JAX backend.

Keras 3's `fit` does not run under TensorFlow's `MultiWorkerMirroredStrategy` (keras#20585), so
several workers use what Keras does support: `keras.distribution` on JAX. One machine with
several GPUs stays on TensorFlow's `MirroredStrategy` (`recipes.train`'s default).

The same command runs on every machine; only the worker index differs:

1. Backend: JAX, chosen before Keras is imported (`recipes train --workers ...` re-executes itself
   with `KERAS_BACKEND=jax`; Python code sets `KERAS_BACKEND=jax` itself).
2. `connect` joins the processes with `keras.distribution.initialize` (worker 0's address is the
   coordinator; on CPU the collectives go through gloo) and sets a `DataParallel` distribution
   over every device of every worker: the variables are replicated, each step's global batch is
   split across the workers and the gradients are all-reduced, so the weights stay identical.
3. Data: `batch_size` is the global batch, as on one machine (same steps, same learning rate).
   Each worker keeps its `1/N` of every global training batch (`Cluster.shard_train`); the last,
   partial global batch is dropped so that every worker takes the same number of steps. An
   image folder's workers each decode only the images of their own part.
   Validation and test data are not sharded: every worker evaluates all of it, so every worker
   gets the same metrics (and the same early-stopping decisions).
4. Worker 0 writes the run folder; the others train with `out=None` and write nothing.
5. Resuming: worker 0's `<run>/backup` is the only backup. When `fit` starts, worker 0 sends its
   backup files to the others (`Cluster.backup_callback`), which restore from a private
   temporary copy (deleted when `fit` ends). Every worker thus restores the same epoch and
   weights, and only worker 0's disk has to survive a crash; the other machines may be new.
   What worker 0 does alone (saving the backup and the model, loading a finished phase) runs
   outside the distribution (`local_only`), since Keras creates variables while saving.

Example:
    >>> # on machine A:  KERAS_BACKEND=jax python train.py 0
    >>> # on machine B:  KERAS_BACKEND=jax python train.py 1
    >>> recipes.train("mobilenet", "digits", workers=["10.0.0.1:4321", "10.0.0.2:4321"],
    ...               worker_index=int(sys.argv[1]), out="runs/digits")
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from . import validation as v

__all__ = [
    "EXTRA_INSTALL", "Cluster", "parse_workers", "check_workers", "check_jax_installed",
    "check_backend", "connect", "check_model_distributed", "local_only", "remove_private_backup",
]

#: What to install for `--workers` (JAX comes from an extra of the package).
EXTRA_INSTALL = 'pip install "keras-recipes[jax]"'

_ACTIVE: Cluster | None = None  # the cluster this process joined (once per process)


def parse_workers(workers) -> tuple[str, ...]:
    """Checks worker addresses: `"host:port,host:port"` (or a list of `"host:port"`).

    Args:
        workers: A comma-separated string or a sequence of `"host:port"` strings; hosts are names,
            IPv4 addresses or bracketed IPv6 addresses (`"[::1]:4321"`); ports 1-65535; no
            address twice.

    Returns:
        The addresses as a tuple, in order (index 0 is the coordinator, worker 0).

    Raises:
        ValueError: Not a string or sequence of strings, empty, a malformed address, a bad port,
            or a repeated address.

    Example:
        >>> parse_workers("10.0.0.1:4321,10.0.0.2:4321")
        ('10.0.0.1:4321', '10.0.0.2:4321')
    """
    if isinstance(workers, str):
        parts = [p.strip() for p in workers.split(",")]
    elif isinstance(workers, (list, tuple)) and all(isinstance(w, str) for w in workers):
        parts = [w.strip() for w in workers]
    else:
        raise ValueError(
            "workers must be 'host:port,host:port,...' or a list of 'host:port' strings; "
            f"Received: workers={workers!r}"
        )
    if not parts or parts == [""]:
        raise ValueError(f"workers must name at least one 'host:port'; Received: workers={workers!r}")
    for address in parts:
        host, sep, port = address.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
        plain = host and not any(c in host for c in "[]:/ ")
        if not sep or not (bracketed or plain) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                "each worker must be 'host:port' with a port in 1-65535 (IPv6 as '[::1]:4321'); "
                f"Received: {address!r} in workers={workers!r}"
            )
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise ValueError(f"each worker address must appear once; Received: {repeated} repeated "
                         f"in workers={workers!r}")
    return tuple(parts)


def check_workers(workers, worker_index):
    """Checks `workers` and `worker_index` together (nothing is started).

    Args:
        workers: None (one machine) or addresses as `parse_workers` accepts them.
        worker_index: This process's position in `workers`, an int in `[0, len(workers))`;
            required with `workers`, refused without.

    Returns:
        `(addresses, index)`, or None when `workers` is None.

    Raises:
        ValueError: Bad addresses, a missing or out-of-range index, or an index without workers.

    Example:
        >>> check_workers("a:1,b:1", 1)
        (('a:1', 'b:1'), 1)
    """
    if workers is None:
        if worker_index is not None:
            raise ValueError("worker_index needs workers (the addresses of every worker); "
                             f"Received: worker_index={worker_index!r} and workers=None")
        return None
    addresses = parse_workers(workers)
    if worker_index is None:
        raise ValueError(
            f"workers needs worker_index (this machine's position in the list, 0 to "
            f"{len(addresses) - 1}); Received: worker_index=None"
        )
    index = v.check_int("worker_index", worker_index, 0, high=len(addresses))
    return addresses, index


def check_jax_installed():
    """Raises when JAX cannot be imported, naming the extra that installs it.

    Raises:
        ValueError: JAX is not installed (`pip install "keras-recipes[jax]"`).
    """
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        raise ValueError(
            f"training on several workers needs JAX, which is not installed; run "
            f"`{EXTRA_INSTALL}`; Received: workers given, no jax module"
        )


def check_backend():
    """Raises unless Keras runs on JAX (the backend is fixed when keras is first imported).

    Raises:
        ValueError: Another backend; says to set `KERAS_BACKEND=jax` before importing
            keras/recipes (the `recipes` command does it by itself).
    """
    import keras

    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            "training on several workers runs on Keras' JAX backend; set the environment "
            "variable KERAS_BACKEND=jax before importing keras or recipes (the `recipes` "
            f"command does it by itself; JAX: `{EXTRA_INSTALL}`); Received: backend={backend!r}"
        )


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The workers of one multi-process run, and this process's place among them.

    Attributes:
        addresses: Every worker's `"host:port"`, worker 0 (the coordinator) first.
        index: This process's worker index.
    """

    addresses: tuple
    index: int

    @property
    def size(self) -> int:
        """Number of workers."""
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        """True on worker 0, the one that writes the run folder."""
        return self.index == 0

    def __str__(self):
        return f"worker {self.index} of {self.size}"

    # ------------------------------------------------------------------ data

    def steps_per_epoch(self, train_size: int, batch_size: int) -> int:
        """Training steps per epoch: whole global batches only (the partial one is dropped)."""
        return train_size // batch_size

    def check_data(self, train_size: int, batch_size: int):
        """Refuses a batch the workers cannot split evenly, or fewer images than one batch.

        Raises:
            ValueError: `batch_size` not a multiple of the number of devices (every worker's
                devices), or a training split smaller than one global batch.
        """
        import jax

        devices = jax.device_count()
        if batch_size % devices:
            raise ValueError(
                f"batch_size must be a multiple of the number of devices of all workers "
                f"({devices}: {self.size} workers x {jax.local_device_count()}), so that every "
                f"device gets the same share; Received: batch_size={batch_size}"
            )
        if train_size < batch_size:
            raise ValueError(
                f"the training split must hold at least one global batch on several workers "
                f"(partial batches are dropped); Received: {train_size} training images, "
                f"batch_size={batch_size}"
            )

    def shard_train(self, dataset, batch_size: int, train_size: int | None = None):
        """This worker's share of a batched training `tf.data` pipeline.

        Every global batch of `batch_size` is cut into `size` equal parts and worker `i` keeps
        part `i`, so the workers together see exactly the global batch of a single-machine run
        (same shuffle order for the same seed); the last partial global batch is dropped so
        every worker takes the same number of steps. A pipeline whose source can build the
        share itself (`recipes.data.core.train_shard`; an image folder's `train_pipeline`) is
        replaced by that share, so each worker decodes only its own images; any other is cut
        batch by batch (`rebatch`, then `shard`: every worker reads all of it).

        Args:
            dataset: Batches of `batch_size` (the last one may be smaller).
            batch_size: The global batch size.
            train_size: Examples per epoch, when known (Keras then shows the steps per epoch).

        Returns:
            A `tf.data.Dataset` of batches of `batch_size // size`.
        """
        import tensorflow as tf

        from .data.core import train_shard

        share = train_shard(dataset, batch_size, self.index, self.size)
        if share is None:
            share = dataset.rebatch(batch_size, drop_remainder=True).rebatch(batch_size // self.size)
            share = share.shard(self.size, self.index)
        if train_size:
            steps = self.steps_per_epoch(train_size, batch_size)
            share = share.apply(tf.data.experimental.assert_cardinality(steps))
        return share

    # ------------------------------------------------------------------ state from worker 0

    def broadcast(self, tree):
        """Worker 0's value of a tree of numpy arrays, on every worker (the others pass arrays of
        the same shapes and dtypes, whose values are ignored). Every worker must call it."""
        from jax.experimental import multihost_utils

        return multihost_utils.broadcast_one_to_all(tree, is_source=self.is_chief)

    def set_weights_from_chief(self, model, weights=None):
        """Sets worker 0's `weights` (a `model.get_weights()` list) on every worker's `model`.

        Assigning a host value to a variable spread over several processes is a collective
        operation in JAX, so every worker calls this (the others with `weights=None`).
        """
        import numpy as np

        template = weights if self.is_chief else model.get_weights()
        model.set_weights([np.asarray(w) for w in self.broadcast(list(template))])

    def backup_callback(self, backup_dir):
        """The BackupAndRestore of this worker, restoring worker 0's backup on every worker.

        Every worker calls it before `fit` (it exchanges data). Worker 0 packs the files of
        `backup_dir` (its run folder's `backup/`; None without a run folder) and sends them;
        each other worker unpacks them into a new private temporary folder. All workers then
        restore the same epoch, weights and optimizer state when `fit` starts (restoring is a
        collective operation, so all of them must); only worker 0 saves a backup afterwards.

        Args:
            backup_dir: Worker 0's backup folder (ignored on the other workers).

        Returns:
            A `keras.callbacks.BackupAndRestore`, or None (a worker other than 0 when worker 0
            has nothing to resume; worker 0 without a run folder). Pass it to
            `remove_private_backup` after `fit`.
        """
        import numpy as np

        payload = b""
        if self.is_chief and backup_dir is not None and Path(backup_dir).is_dir():
            if any(Path(backup_dir).iterdir()):
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as tar:
                    tar.add(str(backup_dir), arcname="backup")
                payload = buffer.getvalue()
        size = int(self.broadcast(np.array([len(payload)], dtype=np.int32))[0])
        if size:
            data = np.frombuffer(payload, np.uint8) if self.is_chief else np.zeros(size, np.uint8)
            data = np.asarray(self.broadcast(data)).astype(np.uint8).tobytes()
        if self.is_chief:
            return None if backup_dir is None else _worker_backup_class()(backup_dir, saves=True)
        if not size:
            return None
        parent = Path(tempfile.mkdtemp(prefix=f"keras-recipes-worker{self.index}-"))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            try:
                tar.extractall(parent, filter="data")
            except TypeError:  # Python < 3.10.12 has no filter (the archive is worker 0's own)
                tar.extractall(parent)
        callback = _worker_backup_class()(parent / "backup", saves=False)
        callback.private_folder = parent
        return callback


@contextlib.contextmanager
def local_only():
    """Runs a block without the distribution: for what worker 0 does alone (saving, loading).

    Keras creates throwaway variables while saving and loading (e.g. a dummy optimizer), and
    creating a variable under a multi-process distribution is a collective operation that every
    worker must join; worker 0 saving alone would then wait forever (or fail with "collective
    mismatch"). Inside this block variables are plain local arrays; reading the replicated
    model variables is local anyway.

    Example:
        >>> with local_only():
        ...     model.save("runs/a/model.keras")
    """
    import keras

    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def remove_private_backup(callback):
    """Deletes the private folder of a `Cluster.backup_callback` (None or worker 0: nothing)."""
    folder = getattr(callback, "private_folder", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _worker_backup_class():
    import keras

    class WorkerBackup(keras.callbacks.BackupAndRestore):
        """Keras' BackupAndRestore for one of several workers: every worker restores (a
        collective operation); only worker 0 saves, outside the distribution (`local_only`)."""

        def __init__(self, directory, *, saves):
            super().__init__(os.fspath(directory), save_freq="epoch", delete_checkpoint=True)
            self.saves = saves
            self.private_folder = None

        def on_epoch_end(self, epoch, logs=None):
            if self.saves:
                with local_only():
                    super().on_epoch_end(epoch, logs)

    return WorkerBackup


def connect(workers, worker_index) -> Cluster | None:
    """Joins the other workers and sets Keras' data-parallel distribution (once per process).

    Call it before building a model: variables created earlier are not spread over the
    workers. `recipes.train` and `recipes.fine_tune` call it for their `workers=`; call it
    yourself to build a model of your own first. A second call with the same workers returns
    the same `Cluster`.

    Args:
        workers: `"host:port,host:port,..."` or a list (worker 0 first; the same list on every
            worker), or None for one machine.
        worker_index: This process's position in `workers`.

    Returns:
        The `Cluster`, or None when `workers` is None.

    Raises:
        ValueError: Bad workers or index (see `check_workers`), JAX not installed, a backend
            other than JAX, or a process that already joined other workers.

    Example:
        >>> cluster = connect("10.0.0.1:4321,10.0.0.2:4321", worker_index=0)
        >>> cluster.is_chief, cluster.size
        (True, 2)
    """
    global _ACTIVE

    checked = check_workers(workers, worker_index)
    if checked is None:
        return None
    cluster = Cluster(*checked)
    if _ACTIVE is not None:
        if _ACTIVE != cluster:
            raise ValueError(f"this process already joined {_ACTIVE.addresses} as worker "
                             f"{_ACTIVE.index}; one process joins one set of workers; "
                             f"Received: workers={cluster.addresses}, worker_index={cluster.index}")
        return _ACTIVE
    check_jax_installed()
    check_backend()
    import jax
    import keras

    _use_gloo_on_cpu(jax)
    keras.distribution.initialize(
        job_addresses=",".join(cluster.addresses), num_processes=cluster.size,
        process_id=cluster.index,
    )
    # auto_shard_dataset=False: the training pipeline is sharded by `shard_train`; validation
    # and test stay whole on every worker, so that every worker computes the same metrics.
    keras.distribution.set_distribution(keras.distribution.DataParallel(
        devices=keras.distribution.list_devices(), auto_shard_dataset=False,
    ))
    _ACTIVE = cluster
    return cluster


def check_model_distributed(model):
    """Refuses a model built before `connect` (its variables live on this worker only).

    Raises:
        ValueError: The model's variables are not spread over every worker's devices.
    """
    import jax

    weights = model.weights
    if weights and len(weights[0].value.sharding.device_set) != jax.device_count():
        raise ValueError(
            "a model trained on several workers must be built after recipes.distribute."
            "connect(workers, worker_index) (its variables are replicated on every worker); "
            f"Received: model {model.name!r} built before connecting"
        )


def _use_gloo_on_cpu(jax):
    """CPU collectives between processes need gloo (harmless on GPU/TPU, whose own are used)."""
    if os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        return  # the user chose (e.g. "mpi")
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError):  # jax < 0.4.27 named the switch differently
        jax.config.update("jax_cpu_enable_gloo_collectives", True)
