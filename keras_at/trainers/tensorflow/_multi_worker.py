"""The Distiller under `tf.distribute.MultiWorkerMirroredStrategy` on Keras 3 (TF backend).

Workaround for keras-team/keras issue 20585 ("Does Keras 3 work with
MultiWorkerMirroredStrategy?"), open on Keras 3.15: in multi-worker mode Keras's TF trainer

1. reduces the first distributed batch with `strategy.reduce("MEAN", batch, axis=None)` in
   `_maybe_symbolic_build`, which cannot convert a `PerReplica` under the collective strategy
   ("Attempt to convert a value (PerReplica:...) to a Tensor"), and
2. reduces every step's logs with `strategy.reduce("MEAN", value, axis=0)`, which fails on the
   scalar metric results ("Invalid reduction dimension 0 for input with 0 dimensions").

The Distiller alone gets the fix (other models keep Keras's behaviour): the symbolic build
reads the dataset's element spec (shapes and dtypes are all it needs), and each logged
scalar is given a leading axis of length 1, so the mean over replicas is a scalar again.
Metric results are already the global values on every replica (their variables are summed
across replicas on update), so their mean is that value. `tests/test_multi_worker.py` runs
plain Keras as an expected failure: when it starts passing, the two overrides can go.

The Distiller's TensorFlow trainer (`trainer.TensorFlowTrainer`) overrides
`_maybe_symbolic_build` and `_make_function` to call `maybe_symbolic_build` and
`make_function` here, one line each. `chief_only` (the trainer's `_select_worker_callbacks`,
called from the Distiller's `fit`) is not a workaround but the multi-worker file discipline
Keras 3 leaves to the user: only the chief writes where a user looks. Nor is `per_worker_input`
(`_split_input_per_worker`, in the Distiller's `fit`, `evaluate` and `predict`): it has a file
pipeline from `keras_at.data.load` read by file, each worker decoding only its own files.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from keras import tree

# Keras 3.15 exports no DataAdapter: its TF trainer reads any instance of this one as is.
from keras.src.trainers.data_adapters.data_adapter import DataAdapter
from keras.src.trainers.data_adapters.tf_dataset_adapter import make_class_weight_map_fn


def in_multi_worker_mode(strategy=None) -> bool:
    """Whether `strategy` (default: the current one) is a collective strategy over workers."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.extended._in_multi_worker_mode()


def _with_leading_axis(value):
    if isinstance(value, tf.Tensor) and value.shape.rank == 0:
        return tf.reshape(value, [1])
    return value


def maybe_symbolic_build(model, keras_build, iterator=None, data_batch=None):
    """`model._maybe_symbolic_build`, which calls Keras's own (`keras_build`) outside
    multi-worker mode."""
    strategy = model.distribute_strategy
    if iterator is None or not in_multi_worker_mode(strategy):
        return keras_build(iterator=iterator, data_batch=data_batch)
    # keras-team/keras#20585: Keras reduces the first PerReplica batch to one tensor, which
    # the collective strategy refuses. The build reads shapes and dtypes only: the
    # dataset's element spec gives them without starting (and dropping) an iteration.
    adapter = iterator.data_adapter
    spec = getattr(adapter, "element_spec", None) or adapter.get_tf_dataset().element_spec
    with strategy.scope():
        model._symbolic_build(data_batch=spec)


def make_function(model, keras_make_function, step_function):
    """`model._make_function`, which calls Keras's own (`keras_make_function`)."""
    if not in_multi_worker_mode(model.distribute_strategy):
        return keras_make_function(step_function)

    def step(data):
        # keras-team/keras#20585: Keras means the logs over replicas along axis 0.
        return tree.map_structure(_with_leading_axis, step_function(data))

    return keras_make_function(step)


# The attribute of a `keras_at.data.load` dataset that rebuilds it for one worker (`by_file`).
_PER_WORKER = "_keras_at_per_worker"


def by_file(dataset: tf.data.Dataset, build) -> tf.data.Dataset:
    """Marks `dataset` as read by file under the strategy: `build(input_context)` is one
    worker's pipeline of the same global batches (`keras_at.data.sharding`). Returns `dataset`.

    The dataset itself is unchanged, so iterating it, or any dataset made from it, reads every
    file (and a strategy shards it by data); only the Distiller reads `build`'s.
    """
    setattr(dataset, _PER_WORKER, build)
    return dataset


class _PerWorkerData(DataAdapter):
    """A `by_file` dataset as Keras's TF trainer reads it: each worker's own pipeline, made by
    `strategy.distribute_datasets_from_function`, and the dataset's number of batches as the
    steps of an epoch, the same on every worker.

    The steps are not the distributed dataset's cardinality, which counts a worker's pieces
    (one per local replica in each step).
    """

    def __init__(self, dataset, strategy, class_weight=None):
        build = getattr(dataset, _PER_WORKER)
        if class_weight is not None:  # as Keras's TFDatasetAdapter weighs a dataset
            weigh, unweighted = make_class_weight_map_fn(class_weight), build

            def build(context):
                return unweighted(context).map(weigh)

        steps = int(dataset.cardinality())
        self._steps = steps if steps >= 0 else None
        # What the symbolic build reads (`maybe_symbolic_build`): one replica's batch.
        self.element_spec = dataset.element_spec
        self._distributed = strategy.distribute_datasets_from_function(build)

    def get_tf_dataset(self):
        return self._distributed

    @property
    def num_batches(self):
        return self._steps

    @property
    def batch_size(self):
        return None

    @property
    def has_partial_batch(self):
        return None

    @property
    def partial_batch_size(self):
        return None


def per_worker_input(model, x, kwargs):
    """`(x, kwargs)` of `model.fit`, `evaluate` or `predict` as this worker reads them.

    Under MultiWorkerMirroredStrategy, a `by_file` dataset as `x` or `validation_data` becomes
    its per-worker form (`_PerWorkerData`; `class_weight` goes with `x`). Anything else, and
    everything outside multi-worker mode, is returned as given.
    """
    strategy = model.distribute_strategy
    if not in_multi_worker_mode(strategy):
        return x, kwargs
    kwargs = dict(kwargs)
    if hasattr(x, _PER_WORKER):
        x = _PerWorkerData(x, strategy, kwargs.pop("class_weight", None))
    if hasattr(kwargs.get("validation_data"), _PER_WORKER):
        kwargs["validation_data"] = _PerWorkerData(kwargs["validation_data"], strategy)
    return x, kwargs


def is_chief(strategy=None) -> bool:
    """True on the worker that writes checkpoints and logs (always True outside multi-worker)."""
    strategy = strategy or tf.distribute.get_strategy()
    return not in_multi_worker_mode(strategy) or strategy.extended.should_checkpoint


class _PrivateBackup(keras.callbacks.BackupAndRestore):
    """A non-chief's `BackupAndRestore`: restores from the chief's backup, saves privately.

    It still saves, as TF's multi-worker checkpointing has every worker save: with the backup
    skipped on the other workers, `examples/imagenet.py` (ResNet-18 <- ResNet-34, 2 workers)
    failed in the chief's `save_weights` with a collective mismatch ("Collective instance ...
    expected type 0 ... but got type 1"), so every worker does the same work.
    """

    def __init__(self, chief: keras.callbacks.BackupAndRestore, private: str):
        super().__init__(chief.backup_dir, chief.save_freq, chief.double_checkpoint,
                         delete_checkpoint=False)  # the chief deletes its backup
        self._private = keras.callbacks.BackupAndRestore(
            os.path.join(private, "backup"), chief.save_freq, chief.double_checkpoint)

    def _save_model(self):
        self._private.set_model(self.model)
        self._private._current_epoch = self._current_epoch
        self._private._last_batch_seen = self._last_batch_seen
        self._private._save_model()


class _RemoveDirectory(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_end(self, logs=None):
        shutil.rmtree(self.path, ignore_errors=True)


# The attribute that holds each writing callback's path, set before `on_train_begin` reads it.
# keras_at's own writing callbacks name theirs in a `writes_to` class attribute.
_WRITER_PATHS = {
    keras.callbacks.TensorBoard: "log_dir",
    keras.callbacks.ModelCheckpoint: "filepath",
    keras.callbacks.CSVLogger: "filename",
}


def chief_only(callbacks, strategy=None):
    """`callbacks` as this worker runs them: on a non-chief, they write into a temporary directory.

    TensorBoard, ModelCheckpoint, CSVLogger and AttentionMapLogger keep running on every worker
    (every worker does the same work, see `_PrivateBackup`), but outside the chief into a
    private directory, removed when `fit` ends. BackupAndRestore restores on every
    worker from the chief's `backup_dir`, which must be a path every worker reads (the same
    disk, or a shared file system); only the chief writes there.
    """
    if is_chief(strategy) or not callbacks:
        return callbacks
    private = tempfile.mkdtemp(prefix="keras-at-worker-")
    kept = []
    for i, callback in enumerate(callbacks):
        if isinstance(callback, keras.callbacks.BackupAndRestore):
            callback = _PrivateBackup(callback, private)
        attribute = getattr(type(callback), "writes_to", None) or next(
            (a for kind, a in _WRITER_PATHS.items() if isinstance(callback, kind)), None)
        if attribute is not None:
            callback = copy.copy(callback)
            name = os.path.basename(getattr(callback, attribute).rstrip("/\\"))
            setattr(callback, attribute, os.path.join(private, str(i), name))
        kept.append(callback)
    return [*kept, _RemoveDirectory(private)]
