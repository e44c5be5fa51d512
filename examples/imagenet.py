"""Table 5: ResNet-18 on ImageNet with attention transfer from ResNet-34, over every visible GPU.

As in the paper (§4.2.2): F_sum^2 attention losses on the outputs of the last two groups of
residual blocks (group2, group3), no KD, and "transfer losses are added on epoch 60/100" (Table
5's caption), read here as after 60 epochs: 100 epochs, beta 0 in epochs 1-60 and 1e3 from epoch
61 on (--transfer-start-epoch counts from 1, as --lr-epochs and history.json; 1 transfers from
the start). beta = 1e3 is the authors' README's (its imagenet.py command): the paper gives beta
for CIFAR only. Paper, top-1 / top-5 validation error %: ResNet-18 30.4 / 10.8 alone, 29.3 /
10.0 with AT. The paper trained with fb.resnet.torch, whose recipe the defaults are: batch 256,
SGD with Nesterov momentum 0.9 kept across the drops, learning rate 0.1 x0.1 every 30 epochs
(its `floor((epoch - 1) / 30)`: epochs 31, 61 and 91 are the first at each lower rate), coupled
weight decay 1e-4. The authors' later PyTorch imagenet.py differs: plain momentum, drops one
epoch earlier (--lr-epochs 30,60,90), momentum zeroed at each drop (--no-nesterov
--momentum-reset). `--pairs auto` pairs all four groups, as the authors' imagenet.py does and as
the paper says they planned; its results use the last two.

Evaluation is single-crop, as fb.resnet.torch and the authors' code: the shorter side resized to
256, the central 224x224 crop (`keras_at.data.load` without augmentation; in proportion for
other --image-size). Training: random-resized crop and flip.

Training is data-parallel with `tf.distribute.MirroredStrategy` over all visible GPUs; without a
GPU it runs on the default (one-device) strategy. --batch-size is the global batch. The folder
is ImageNet-like: DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG. Without --teacher, the
ResNet-34 is trained first into the same run directory. --teacher takes a .keras model, or the
authors' released ResNet-34 itself, `resnet-34-export.pth` (needs PyTorch to read) or the same
arrays saved as .npz (`keras_at.models.load_authors_resnet`; their class order is the sorted
synset folders, which `keras_at.data` uses too).

    python examples/imagenet.py /data/imagenet --teacher resnet-34-export.pth --out runs/r18-at
    python examples/imagenet.py /data/imagenet --teacher r34.keras --beta 0 --out runs/r18
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _cluster  # noqa: E402
import _common  # noqa: E402
import _training  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_at import data, models  # noqa: E402

# --teacher files read as the authors' exported weights rather than as a Keras model.
AUTHORS_WEIGHTS = (".pth", ".pt", ".npz")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common.add_folder_args(p)
    p.add_argument("--cpu-replicas", type=int, default=0,
                   help="without GPUs: split the CPU into this many devices and mirror over them "
                   "(tries the multi-device path on a laptop)")
    _cluster.add_multi_worker_arg(p)
    _common.add_teacher_args(p, ".keras file, or the authors' resnet-34-export.pth (or its "
                             "arrays as .npz)")
    _common.add_training_args(p, epochs=100, batch_size=256, lr=0.1, lr_epochs="31,61,91",
                              lr_decay=0.1, weight_decay=1e-4, nesterov=True,
                              momentum_reset=False)
    _common.add_transfer_args(p, pairs="group2,group3")
    p.add_argument("--transfer-start-epoch", type=int, default=61,
                   help="the first epoch (counted from 1, as --lr-epochs) with the transfer "
                   "losses: --beta (and --alpha, --hint-beta) are 0 before it and their values "
                   "from it on; Table 5's caption, 'added on epoch 60/100', read as after 60 "
                   "epochs; 1 transfers from the start")
    return p


def strategy(cpu_replicas: int) -> tf.distribute.Strategy:
    """MirroredStrategy over the visible GPUs (or `cpu_replicas` CPU devices), else the default."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    if gpus:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def load_teacher(path: str, input_shape: tuple) -> keras.Model:
    """--teacher: the authors' exported weights (.pth, .npz) or a .keras model."""
    if path.lower().endswith(AUTHORS_WEIGHTS):
        teacher = models.load_authors_resnet(path, input_shape=input_shape)
        print(f"Teacher: {teacher.name} from the authors' weights {path}.")
        return teacher
    return keras.saving.load_model(path)


def main(argv=None) -> dict:
    p = parser()
    args = _common.parse(p, argv)
    if not 1 <= args.transfer_start_epoch <= args.epochs:
        p.error(f"--transfer-start-epoch {args.transfer_start_epoch} must be in [1, --epochs "
                f"{args.epochs}] (counted from 1): the transfer losses would never be on.")
    mirror = _cluster.strategy(args) if args.multi_worker else strategy(args.cpu_replicas)
    if args.multi_worker:
        args.out = _cluster.run_dir(args, mirror)
    print(f"{mirror.num_replicas_in_sync} replica(s): {type(mirror).__name__}.")
    classes = data.info(args.data).num_classes
    shape = (args.image_size, args.image_size, 3)

    def resnet(depth):
        return lambda: models.resnet(depth, classes, shape, weight_decay=args.weight_decay)

    # Networks, optimizer and variables are created, and fit runs, under the strategy.
    with mirror.scope():
        return _training.run(args, "imagenet", _common.folder_data(args), resnet(34), resnet(18),
                             load_teacher=lambda path: load_teacher(path, shape))


if __name__ == "__main__":
    main()
