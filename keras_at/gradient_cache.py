"""The teacher's input gradient of gradient-based AT (eq. 4), computed once instead of every step.

The paper's eq. 4 compares the student's input gradient J_S with the teacher's J_T. The
teacher is frozen and runs in inference mode, so J_T is a fixed function of the image and its
label: the step spends a teacher forward and backward pass (3x a plain student step for
Table 3's NIN pair on a CPU) recomputing the same tensor every epoch. Computed once per
training example with the step's own code (`Distiller.teacher_input_gradients`) and given back
with the images as `((images, J_T), labels)`, it is exact, not an approximation, as long as
every image the student sees is one J_T was computed for. With horizontal flips as the only
augmentation (the paper's Table 3) an example has two images, x and flip(x), and two gradients,
J_T(x) and J_T(flip x) (not flip(J_T(x)): a teacher is not flip-symmetric), so
`Distiller.cached_gradient_dataset` computes both. Random crops, or any other augmentation,
need J_T of the augmented image: feed images alone and the step computes it.

Memory: N·H·W·C·4 bytes (float32) per gradient table, two tables with flips, plus the images
in float32: 1.8 GB in all for CIFAR-10's 50,000 training images.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_at import data
from keras_at.checks import check_batch, check_per_example_loss
from keras_at.data.pipeline import check_batch_size


class TeacherGradientCache:
    """The `Distiller`'s methods that precompute the teacher's input gradients.

    A mixin of `keras_at.Distiller`: it reads the Distiller's teacher tap, compiled task loss
    and `_run`, the one implementation of a forward pass with its input gradient.
    """

    def teacher_input_gradients(self, x, y, batch_size: int = 128) -> np.ndarray:
        """The teacher's input gradient J_T of every example, as the training step computes it.

        J_T is d/dx of the teacher's summed per-example task loss (the compiled loss), in
        inference mode: a fixed function of `(x, y)`. Given back as `((x, J_T), y)`, the step
        reads it instead of running the teacher's forward and backward pass. Sample weights
        weigh each example's term, not J_T, in the step as here.

        Args:
            x: `(N, H, W, C)` floating-point images, as the networks see them.
            y: `(N,)` labels.
            batch_size: examples per teacher pass (the result does not depend on it).

        Returns:
            float32 `(N, H, W, C)`: N·H·W·C·4 bytes of memory.

        Example:

        ```python
        gradients = distiller.teacher_input_gradients(x_train, y_train)
        distiller.fit((x_train, gradients), y_train, batch_size=128, epochs=10)
        ```
        """
        check_per_example_loss(self._task_loss_fn)
        check_batch_size(batch_size)
        if len(x) != len(y):
            raise ValueError(f"Expected as many labels as images; got {len(x)} images and "
                             f"{len(y)} labels.")
        teacher_gradients = self._teacher_gradient_function()
        out = np.empty(np.shape(x), "float32")
        for start in range(0, len(x), batch_size):
            end = start + batch_size
            out[start:end] = teacher_gradients(
                tf.convert_to_tensor(x[start:end]), tf.convert_to_tensor(y[start:end])
            )
        return out

    def _teacher_gradient_function(self):
        """J_T of a batch as a `tf.function`, traced once per compiled task loss, not per call."""
        loss_fn = self._task_loss_fn
        cached = getattr(self, "_teacher_gradient_cache", None)
        if cached is not None and cached[0] is loss_fn:
            return cached[1]

        @tf.function(reduce_retracing=True)
        def teacher_gradients(images, labels):
            labels = check_batch(images, labels, self._taps.student, self.student.name)
            *_, jacobian = self._run(self._taps.teacher, images, labels, None, False, True)
            return jacobian

        # A tuple: Keras's attribute tracking leaves it alone (it wraps lists and dicts).
        self._teacher_gradient_cache = (loss_fn, teacher_gradients)
        return teacher_gradients

    def cached_gradient_dataset(
        self, x, y, batch_size: int = 128, flip: bool = True, shuffle: bool = True, seed=None
    ) -> tf.data.Dataset:
        """Training data for gradient AT whose teacher gradients are computed once, here.

        Computes J_T of every image and, with `flip`, of every horizontally flipped image,
        then returns `keras_at.data.with_teacher_gradients`: batches of
        `((images, teacher_gradients), labels)`, each image flipped with probability 1/2 per
        epoch when `flip`, and paired with J_T of the image as flipped. Exact when these flips
        are the only augmentation. Order and flips are those of `keras_at.data.load` with
        `augment=Augmentation(pad=0)` and the same `seed`, under the same global seed.

        Args:
            x: `(N, H, W, C)` floating-point images, normalised, not augmented.
            y: `(N,)` labels.
            batch_size: examples per batch, for the teacher passes and for training.
            flip: random horizontal flips (the paper's Table 3 augmentation).
            shuffle: reshuffle every epoch.
            seed: makes shuffling and flips reproducible (each epoch still differs).

        Returns:
            A `tf.data.Dataset` holding N·H·W·C·4 bytes for the images and for each of the one
            (two with `flip`) gradient tables: 1.8 GB for CIFAR-10's training set with flips.

        Example:

        ```python
        distiller = keras_at.Distiller(student, teacher, pairs=[], grad_beta=1.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        train = distiller.cached_gradient_dataset(x_train, y_train, batch_size=128, seed=0)
        distiller.fit(train, epochs=200)
        ```
        """
        if "grad_beta" not in self._active:
            raise ValueError(
                "cached_gradient_dataset is for gradient AT, but grad_beta is 0 and was never on; "
                "construct the Distiller with grad_beta > 0."
            )
        x = np.asarray(x)
        gradients = self.teacher_input_gradients(x, y, batch_size)
        flipped = self.teacher_input_gradients(x[:, :, ::-1], y, batch_size) if flip else None
        return data.with_teacher_gradients(x, y, gradients, flipped, batch_size, shuffle, seed)


def step_gradients(cached, loss) -> tf.Tensor:
    """The step's J_T from a cached one, checked: the gradient of the summed per-example losses.

    Sample weights do not scale it: the step weighs each example's distance `||J_S - J_T||²`
    by the example's weight, as for every other term.
    """
    check_per_example_loss(loss)
    return tf.cast(cached, tf.float32)
