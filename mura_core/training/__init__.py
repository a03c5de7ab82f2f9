"""Training one run: ``train(model, cache, config)`` (``trainer.py``) and its parts, each in a
module of its own: the settings (``config``), the learning-rate schedule (``schedule``), the
batches (``feed``), the evaluation points, the run's state and files (``run_state``,
``checkpoint``, ``history``, ``runfolder``) and the divergence guard (``divergence``)."""
from .class_weights import mura_class_weights
from .config import TrainConfig
from .divergence import TrainingDiverged
from .history import load_history
from .runfolder import RUN_FILES, check_run_folder, earlier_run_files
from .trainer import Trainer, TrainResult, train

__all__ = ["RUN_FILES", "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged",
           "check_run_folder", "earlier_run_files", "load_history", "mura_class_weights", "train"]
