"""Table 4: ResNet-18 fine-tuned on CUB or an image folder with attention transfer from a ResNet-34.

As in the paper (§4.2.1, CUB and MIT Scenes): both networks start from ImageNet weights; the
batch-normalization layers are fixed (inference mode, statistics and affine frozen) and so is
the first group of residual blocks, with the stem below it (see `freeze`); the ResNet-34 is
fine-tuned first, then teaches the ResNet-18 with F_sum^2 attention losses on the last two
groups (group2, group3). Paper, error %: CUB 28.5 alone, 27.0 with AT (teacher 26.5); Scenes
28.2 alone, 27.1 with AT (teacher 26.0). Its KD row, 27.0 on CUB and 28.1 on Scenes, is
--beta 0 --alpha 0.9 (T = 4, --temperature): the paper gives neither alpha nor T for it, so
these are its CIFAR values (§4.1).

Data: a CUB-200-2011 folder as distributed (images.txt, bounding_boxes.txt,
train_test_split.txt, ...: `keras_at.data.cub`) is read with the paper's CUB preprocessing:
each image cropped to its bounding box, the shorter side rescaled to 256 (256/224 of
--image-size), a random 224 crop for training (and, our choice, a horizontal flip); evaluation
takes the central crop (our choice: the paper does not say). Any other image folder (Scenes:
DIR/train/<class>/, DIR/test/<class>/) trains on random-resized crops and is evaluated on a
single central crop after the same rescale.

keras_at ships no ImageNet weights and this script downloads nothing: pass --student-weights and
--teacher-weights (.keras files of `keras_at.models.resnet(18 | 34)` with ImageNet weights, e.g.
ported from torchvision; every layer but the classifier is copied by name), or --teacher (a
ResNet-34 already fine-tuned). Without weights the networks start from random initialisation,
and the script says so: the pipeline runs, the numbers are not the paper's. The paper gives no
fine-tuning hyper-parameters; the defaults below are ours.

    python examples/finetune.py /data/CUB_200_2011 --student-weights r18.keras \\
        --teacher-weights r34.keras --out runs/cub-at
    python examples/finetune.py /data/CUB_200_2011 --teacher runs/cub-at/teacher.keras \\
        --beta 0 --student-weights r18.keras --out runs/cub-student
    python examples/finetune.py /data/CUB_200_2011 --teacher runs/cub-at/teacher.keras \\
        --beta 0 --alpha 0.9 --student-weights r18.keras --out runs/cub-kd
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import _training  # noqa: E402
import keras  # noqa: E402

from keras_at import data, models  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common.add_folder_args(p)
    p.add_argument("--student-weights", default=None,
                   help="ImageNet ResNet-18 .keras file (default: random initialisation)")
    p.add_argument("--teacher-weights", default=None,
                   help="ImageNet ResNet-34 .keras file for the teacher fine-tuned here")
    p.add_argument("--frozen-group", default="group0",
                   help="this group and every layer before it are frozen ('' freezes none)")
    p.add_argument("--train-bn", action="store_true",
                   help="train the BatchNormalization layers instead of fixing them (for "
                   "random initialisation, whose fixed statistics do not normalise)")
    _common.add_teacher_args(p)
    _common.add_training_args(p, epochs=30, batch_size=64, lr=0.01, lr_epochs="10,20",
                              lr_decay=0.1, weight_decay=1e-4)
    _common.add_transfer_args(p, pairs="group2,group3")
    return p


def copy_pretrained(model: keras.Model, path: str | None) -> keras.Model:
    """Copies, by layer name, every weight of the .keras model at `path` whose shape matches
    (all but a classifier with another number of classes)."""
    if path is None:
        print(f"No ImageNet weights for {model.name}: it starts from random initialisation, so "
              "this run shows the pipeline, not the paper's numbers (and fixed BN layers do not "
              "normalise: see --train-bn).")
        return model
    source = keras.saving.load_model(path, compile=False)
    copied = 0
    for layer in model.layers:
        try:
            weights = source.get_layer(layer.name).get_weights()
        except ValueError:
            continue
        if weights and [w.shape for w in weights] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(weights)
            copied += 1
    print(f"{model.name}: copied the weights of {copied} layers from {path}.")
    return model


def freeze(model: keras.Model, frozen_group: str, train_bn: bool = False) -> keras.Model:
    """Fixes every layer up to the end of `frozen_group`, and every BatchNormalization layer.

    A frozen Keras BatchNormalization runs in inference mode, with its pretrained statistics.

    "Up to" includes the stem (conv0, bn0) below group0. The paper names only BN and "the first
    group of residual blocks", and the authors published no fine-tuning code; this is our
    reading. Freezing group0 while the stem below it trains would make no sense: the stem would
    change group0's input while group0 cannot adapt to it, and the point of freezing the first
    layers (generic ImageNet features kept on ~5K images; no backward pass below group1) is
    lost. Fine-tuning code freezes from the input up (torchvision's `trainable_layers`,
    Detectron's `FREEZE_AT`: freezing the first stage freezes the stem too).
    """
    names = [layer.name for layer in model.layers]
    if frozen_group and frozen_group not in names:
        raise SystemExit(f"--frozen-group {frozen_group!r} is not a layer of {model.name}.")
    last_frozen = names.index(frozen_group) if frozen_group else -1
    for i, layer in enumerate(model.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        if i <= last_frozen or (is_bn and not train_bn):
            layer.trainable = False
    return model


def main(argv=None) -> dict:
    args = _common.parse(parser(), argv)
    classes = data.info(args.data).num_classes
    shape = (args.image_size, args.image_size, 3)

    def resnet(depth, weights):
        def make():
            model = models.resnet(depth, classes, shape, weight_decay=args.weight_decay)
            return freeze(copy_pretrained(model, weights), args.frozen_group, args.train_bn)

        return make

    return _training.run(args, "finetune", _common.folder_data(args),
                         resnet(34, args.teacher_weights), resnet(18, args.student_weights))


if __name__ == "__main__":
    main()
