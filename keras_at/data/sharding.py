"""A file pipeline cut by worker: each worker reads only its share of every global batch.

`load()` on an image folder or CUB gives an ordinary `tf.data.Dataset` that reads every file.
Under `MultiWorkerMirroredStrategy`, `Distiller.fit`, `evaluate` and `predict` rebuild it per
worker instead (`keras_at.trainers.tensorflow._multi_worker.per_worker_input`), from the same
stream of example indices, with `worker_batches`: the global batches stay those of the whole
dataset (the user's `batch_size`, the same number of them on every worker), and a worker decodes
only the files of its pieces.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def worker_batches(
    indices: tf.data.Dataset,
    batch_size: int,
    context: tf.distribute.InputContext,
    example: Callable,
    like,
) -> tf.data.Dataset:
    """This worker's pieces of the global batches of `indices`, each read with `example`.

    A global batch of n examples is cut into `context.num_replicas_in_sync` contiguous pieces
    of ceil(n / replicas) examples (in a last, partial batch the final pieces are smaller, or
    empty), and piece `r * workers + w` goes to local replica r of worker w. That is how
    TensorFlow splits a batched dataset under the strategy (rebatch, then shard by data), so
    each replica sees the examples it would see with the whole pipeline on every worker, and
    Keras's `predict`, which gathers the pieces in that order, returns them in dataset order.

    Args:
        indices: the example stream, as `example` reads it (an index, or `(index, seed)`).
        batch_size: the global batch size.
        context: the worker's `tf.distribute.InputContext`.
        example: one element of `indices` -> `(image, label)`.
        like: the whole pipeline's element spec, whose shapes (but the batch size) are known:
            the shapes of an empty piece.

    Returns:
        A dataset of `local replicas * global batches` piece batches, with that cardinality.
    """
    workers, replicas = context.num_input_pipelines, context.num_replicas_in_sync
    local = replicas // workers
    batches = indices.batch(batch_size)

    def pieces(*batch):
        n = tf.shape(batch[0])[0]
        size = (n + replicas - 1) // replicas

        def piece(replica):
            k = tf.cast(replica, tf.int32) * workers + context.input_pipeline_id
            low, high = tf.minimum(n, k * size), tf.minimum(n, (k + 1) * size)
            cut = tuple(t[low:high] for t in batch)
            return cut if len(cut) > 1 else cut[0]

        return tf.data.Dataset.range(local).map(piece)

    def read(*piece):
        piece = piece if len(piece) > 1 else piece[0]
        examples = (
            tf.data.Dataset.from_tensor_slices(piece)
            .map(example, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size)
        )
        # An empty piece gives no batch: the replica still needs one, of 0 examples.
        empty = tf.nest.map_structure(
            lambda spec, known: tf.zeros([0, *known.shape[1:]], spec.dtype),
            examples.element_spec,
            like,
        )
        return examples.concatenate(tf.data.Dataset.from_tensors(empty)).take(1)

    # Each piece is one inner dataset of one batch: the deterministic interleave keeps their
    # order while the next piece is decoded.
    data = batches.flat_map(pieces).interleave(
        read, cycle_length=2, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return data.apply(tf.data.experimental.assert_cardinality(batches.cardinality() * local))
