"""Training on several local devices with `tf.distribute.MirroredStrategy`: one model replica per
device, gradients summed across replicas. The run's batch size is the global batch (each device
gets batch/N), so the optimisation - and the learning rate - are those of one device. Across
machines the unit of work is the run (Slurm arrays), since Keras 3 has no multi-worker strategy."""

from __future__ import annotations

import contextlib
import logging

from ..errors import UserError

log = logging.getLogger(__name__)


def device_names(count: int) -> list[str]:
    """The first `count` GPUs; on a machine without GPUs, the CPU split into `count` logical devices
    (which exercises the same code path; it is not faster)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if count > len(gpus):
            raise UserError(f"--devices {count}: this machine has {len(gpus)} GPU(s)")
        return [f"/gpu:{i}" for i in range(count)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow already started: use the logical CPUs it has
        if len(tf.config.list_logical_devices("CPU")) < count:
            raise UserError(f"--devices {count} on CPU needs a fresh process (TensorFlow already started)") from None
    log.info("no GPU: the CPU is split into %d logical devices (tests the multi-device path; not faster)", count)
    return [f"/cpu:{i}" for i in range(count)]


def device_scope(count: int, batch_size: int):
    """A MirroredStrategy scope over `count` devices (a no-op scope for one)."""
    if count == 1:
        return contextlib.nullcontext()
    if batch_size % count:
        raise UserError(f"--batch-size {batch_size} must divide evenly over {count} devices")
    import tensorflow as tf

    names = device_names(count)
    log.info("MirroredStrategy over %s: global batch %d, %d per device", ", ".join(names), batch_size,
             batch_size // count)
    return tf.distribute.MirroredStrategy(names).scope()
