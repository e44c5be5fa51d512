"""Callbacks for a `keras_at.Distiller`, one per module, as `keras/src/callbacks/`.

- `BetaScheduler` (`beta_scheduler.py`): a loss weight set at each epoch start from a schedule,
  as `keras.callbacks.LearningRateScheduler` sets the learning rate;
- `BetaDecay` (`beta_decay.py`): the paper's step decay of a loss weight;
- `AttentionMapLogger` (`attention_map_logger.py`): attention maps of a fixed batch in
  TensorBoard;
- `BackupAndRestore` (`backup_and_restore.py`): `keras.callbacks.BackupAndRestore` that resumes
  mid-epoch exactly;
- `TerminateOnNaN` (`terminate_on_nan.py`): stops at a non-finite term or weight, naming it.
"""

from keras_at.callbacks.attention_map_logger import AttentionMapLogger
from keras_at.callbacks.backup_and_restore import BackupAndRestore
from keras_at.callbacks.beta_decay import BetaDecay
from keras_at.callbacks.beta_scheduler import BetaScheduler
from keras_at.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = ["AttentionMapLogger", "BackupAndRestore", "BetaDecay", "BetaScheduler", "TerminateOnNaN"]
