"""Where training runs: `--strategy`, `--cpu-devices` and `TF_CONFIG` -> a tf.distribute strategy.

This must run before anything else touches TensorFlow's devices: logical CPU devices and the
collective ops of several workers can only be set up while the runtime is still unconfigured.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from textgen.errors import TextgenError
from textgen.store.config import STRATEGIES

ROLES = ("chief", "worker")


@dataclass(frozen=True)
class Placement:
    """The chosen strategy and what it means for this process."""

    strategy: tf.distribute.Strategy
    name: str  # one-device, mirrored or multi-worker
    replicas: int  # model copies in sync, over all workers; each gets batch_size / replicas
    workers: int = 1
    task: str = "worker 0"
    is_chief: bool = True  # only the chief writes the model folder

    def describe(self) -> str:
        if self.name == "multi-worker":
            return f"{self.replicas} replicas on {self.workers} workers (multi-worker, this is {self.task})"
        return f"{self.replicas} replica{'s' if self.replicas > 1 else ''} ({self.name})"


class _KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy that Keras 3's `fit` can drive.

    Keras 3.15 asks the strategy to reduce whole (inputs, targets) structures and scalar metrics
    with `axis=0`, which MultiWorkerMirroredStrategy rejects ("Invalid reduction dimension 0 for
    input with 0 dimensions", tensorflow#72388, keras#20585). Here structures are reduced leaf by
    leaf and scalars without an axis, which is what Keras means.
    """

    def reduce(self, reduce_op, value, axis):
        def reduce_one(leaf):
            rank = self.experimental_local_results(leaf)[0].shape.rank
            return super(_KerasMultiWorkerStrategy, self).reduce(reduce_op, leaf, None if rank == 0 else axis)

        return tf.nest.map_structure(reduce_one, value)


def split_cpu(count: int) -> None:
    """Present the CPU as `count` logical devices, so that `mirrored` can run replicas on them."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow's devices are already initialized
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise TextgenError(f"--cpu-devices {count} must be set before TensorFlow starts; run the "
                               "training in a fresh process") from None


def read_cluster(environ: dict[str, str] | None = None) -> tuple[dict[str, list[str]], str, int]:
    """The cluster and this process's task from `TF_CONFIG`, checked so mistakes are one clear line."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        raise TextgenError("--strategy multi-worker needs the TF_CONFIG environment variable (the "
                           "cluster's workers and this process's task; see README, Scaling out)")
    try:
        config: Any = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        role, index = task["type"], int(task["index"])
        hosts = {name: list(addresses) for name, addresses in cluster.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TextgenError('TF_CONFIG is not valid: it needs {"cluster": {"worker": ["host:port", ...]}, '
                           '"task": {"type": "worker", "index": N}}') from None
    unsupported = sorted(set(hosts) - set(ROLES))
    if unsupported:
        raise TextgenError(f"TF_CONFIG: multi-worker training has no {', '.join(unsupported)} tasks; "
                           "only chief and worker")
    if role not in hosts or not 0 <= index < len(hosts[role]):
        raise TextgenError(f"TF_CONFIG: task {role} {index} is not in the cluster")
    return hosts, role, index


def is_chief(cluster: dict[str, list[str]], role: str, index: int) -> bool:
    """The chief is the `chief` task, or worker 0 when the cluster has none (TensorFlow's rule)."""
    return role == "chief" or (role == "worker" and index == 0 and "chief" not in cluster)


def place(requested: str, cpu_devices: int | None = None) -> Placement:
    """Resolve `--strategy` (auto: mirrored over several GPUs, or over --cpu-devices; else one device)."""
    if requested not in STRATEGIES:
        raise TextgenError(f"unknown strategy {requested!r}; choose one of {', '.join(STRATEGIES)}")
    if cpu_devices is not None and requested in ("one-device", "multi-worker"):
        raise TextgenError(f"--cpu-devices is for --strategy mirrored or auto, not {requested}")
    if requested == "multi-worker":
        return _multi_worker()
    if cpu_devices:
        split_cpu(cpu_devices)
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "auto":
        requested = "mirrored" if len(gpus) > 1 or (not gpus and (cpu_devices or 1) > 1) else "one-device"
    if requested == "one-device":
        return Placement(tf.distribute.get_strategy(), "one-device", 1)
    if gpus:
        strategy = tf.distribute.MirroredStrategy()
    elif (cpu_devices or 1) < 2:
        raise TextgenError("--strategy mirrored needs two devices or more, and no GPU is visible: split "
                           "the CPU with --cpu-devices N (N >= 2)")
    else:
        strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    return Placement(strategy, "mirrored", strategy.num_replicas_in_sync)


def _multi_worker() -> Placement:
    cluster, role, index = read_cluster()
    try:
        strategy = _KerasMultiWorkerStrategy()
    except RuntimeError as exc:  # "Collective ops must be configured at program startup"
        raise TextgenError(f"--strategy multi-worker must be set up before TensorFlow starts ({exc}); "
                           "run the training in a fresh process") from None
    workers = sum(len(hosts) for hosts in cluster.values())
    return Placement(strategy, "multi-worker", strategy.num_replicas_in_sync, workers, f"{role} {index}",
                     is_chief(cluster, role, index))
