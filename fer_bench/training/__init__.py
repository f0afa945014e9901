"""Training: the fit loop (checkpoint, history, resume, early stopping), optimisers and schedules,
numeric precision."""

from .fit import TrainSettings, compile_for_training, fit_stage

__all__ = ["TrainSettings", "compile_for_training", "fit_stage"]
