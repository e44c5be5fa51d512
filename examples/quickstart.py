"""A teacher, the student alone and the student with AT: the README's first example.

python examples/quickstart.py   # Fashion-MNIST (offline: Debian's dataset-fashion-mnist)
"""

import os

import keras

import keras_at

# The README's run: 500 training images, students 20 epochs, the teacher 40. (The test runs this
# file with smaller sizes through these variables.)
LIMIT = int(os.environ.get("QUICKSTART_LIMIT", 500))
EPOCHS = int(os.environ.get("QUICKSTART_EPOCHS", 20))
SEED = int(os.environ.get("QUICKSTART_SEED", 0))

shape = keras_at.data.info("fashion_mnist").image_shape
test = keras_at.data.load("fashion_mnist", split="test", batch_size=500, limit=2000)
ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_data():  # augmented, shuffled in the same order for every network
    return keras_at.data.load("fashion_mnist", batch_size=32, limit=LIMIT, seed=SEED)


def sgd(epochs):  # the authors' SGD (lr 0.1, x0.2 steps, momentum 0.9); steps at 1/2 and 3/4 here
    steps = len(train_data())
    bounds = [epochs // 2 * steps, epochs * 3 // 4 * steps]
    return keras.optimizers.SGD(
        keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [0.1, 0.02, 0.004]),
        momentum=0.9,
    )


def error(model):
    model.compile(loss=ce, metrics=["accuracy"])
    return 100 * (1 - model.evaluate(test, verbose=0)[1])


# Weight decay 5e-4 as the authors' coupled L2 (the models' regularisers), not SGD's decoupled one.
keras.utils.set_random_seed(SEED)
teacher = keras_at.models.wide_resnet(16, 2, input_shape=shape, weight_decay=5e-4)
teacher.compile(sgd(2 * EPOCHS), ce)
teacher.fit(train_data(), epochs=2 * EPOCHS, verbose=0)

keras.utils.set_random_seed(SEED)  # the same initialisation for both students
alone = keras_at.models.wide_resnet(16, 1, input_shape=shape, weight_decay=5e-4)
alone.compile(sgd(EPOCHS), ce)
alone.fit(train_data(), epochs=EPOCHS, verbose=0)

keras.utils.set_random_seed(SEED)
student = keras_at.models.wide_resnet(16, 1, input_shape=shape, weight_decay=5e-4)
distiller = keras_at.Distiller(student, teacher, beta=1e3)  # AT on group0..2
distiller.compile(sgd(EPOCHS), ce)
distiller.fit(train_data(), epochs=EPOCHS, verbose=0)  # logs loss, task_loss, at_loss

print(f"teacher WRN-16-2: {error(teacher):.2f}% test error")
print(f"student WRN-16-1 alone: {error(alone):.2f}%, with AT: {error(student):.2f}%")
