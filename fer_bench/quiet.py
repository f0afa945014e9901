"""Keep TensorFlow's start-up and graph-optimiser log lines (absl, oneDNN, CUDA probing, grappler)
off the console unless the user asks for them with `--verbose`. oneDNN stays on: only its
messages go."""

from __future__ import annotations

import contextlib
import logging
import os
import sys


@contextlib.contextmanager
def stderr_to_devnull():
    """Silence file descriptor 2 itself: C++ code writes there before any log level applies."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_native_logs(verbose: bool = False) -> None:
    """Before any native library loads: FFmpeg's and OpenCV's own console lines off (our errors say
    what went wrong), TensorFlow's log level set; `verbose` keeps them all."""
    if verbose:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def import_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and Keras once, quietly unless `verbose`; later imports are free."""
    if "tensorflow" in sys.modules:
        return
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        import keras  # noqa: F401
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # also silences grappler's errors during training
    with stderr_to_devnull():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.get_logger().setLevel(logging.ERROR)
    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
