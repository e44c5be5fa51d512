"""Tables 1 and 2: a WRN or NIN student learns from a teacher by AT, F-ActT, KD or AT+KD.

The defaults are the authors' CIFAR recipe (their cifar.py): 200 epochs of SGD (momentum 0.9,
batch 128), learning rate 0.1 multiplied by 0.2 from epochs 60, 120 and 160 (counted from 1, as
their torchnet loop does: epoch 60 is the first at 0.02), the momentum zeroed at each drop (they
create a new optimizer there), coupled weight decay 5e-4, 4-pixel pad + random crop + horizontal
flip, beta = 1e3 on every group's F_sum^2 attention map. Without --teacher, the teacher (the
same family's: WRN-16-2, or NIN-wide for --arch nin) is trained first, with the same recipe,
into the same run directory. `--arch nin` is Table 1's NIN row: NIN-thin (0.2M) <- NIN-wide
(1M), both with batch normalization, paired at each group's output (group0..2, a group being a
3x3, 1x1, 1x1 block); the paper gives no NIN recipe, so it is the WRN one (our choice).

    # AT, WRN-16-1 <- WRN-16-2 (trains the teacher first): Table 1 gives 7.93% error
    python examples/cifar.py --out runs/at
    # the same teacher, the student alone (8.77%), F-ActT (8.51%), KD (7.41%), AT+KD (7.51%)
    python examples/cifar.py --teacher runs/at/teacher.keras --beta 0 --out runs/student
    python examples/cifar.py --teacher runs/at/teacher.keras --beta 0 --hint-beta 1e3 \
        --out runs/f-actt
    python examples/cifar.py --teacher runs/at/teacher.keras --beta 0 --alpha 0.9 --out runs/kd
    python examples/cifar.py --teacher runs/at/teacher.keras --alpha 0.9 --out runs/at-kd
    # the NIN row: NIN-thin <- NIN-wide, AT (Table 1: 8.93%)
    python examples/cifar.py --arch nin --out runs/nin-at
    # Table 2 (attention mapping function) and the single-group ablation
    python examples/cifar.py --teacher runs/at/teacher.keras --attention max --p 1 --out runs/max
    python examples/cifar.py --teacher runs/at/teacher.keras --pairs group1 --out runs/group1

AT+KD and F-ActT decay their weight (beta, hint_beta) x0.2 at the learning-rate drops: the
paper says they decay it, not how, so the schedule is ours (--beta-decay).

The run directory gets student.keras, teacher.keras (when trained here), history.json (every
epoch: losses, learning rate, beta, test error) and TensorBoard logs with the attention maps
(`tensorboard --logdir runs/at/logs`; TensorFlow writes them, so without it they are skipped,
one line says so: docs/jax_without_tensorflow.md). An interrupted run continues with --resume.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import _training  # noqa: E402

from keras_at import data, models  # noqa: E402

ARCHS = ("wrn", "nin")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="cifar10",
                   choices=("cifar10", "cifar100", "fashion_mnist", "mnist", "digits"))
    p.add_argument("--data-dir", default=None, help="where to look for the dataset's files first")
    p.add_argument("--arch", default="wrn", choices=ARCHS,
                   help="student family: WRN-depth-width, or NIN-thin (0.2M parameters)")
    p.add_argument("--teacher-arch", default=None, choices=ARCHS,
                   help="teacher family (default: --arch): WRN-teacher-depth-teacher-width, or "
                   "NIN-wide (1M parameters)")
    p.add_argument("--depth", type=int, default=16, help="student WRN depth")
    p.add_argument("--width", type=int, default=1, help="student WRN widening factor")
    p.add_argument("--teacher-depth", type=int, default=16)
    p.add_argument("--teacher-width", type=int, default=2)
    _common.add_teacher_args(p)
    _common.add_training_args(p)
    _common.add_transfer_args(p)
    return p


def main(argv=None) -> dict:
    """Runs one experiment; returns its history.json contents."""
    args = _common.parse(parser(), argv)
    meta = data.info(args.dataset)

    def load_data():
        train = data.load(args.dataset, "train", batch_size=args.batch_size,
                          data_dir=args.data_dir, seed=args.seed, limit=args.limit)
        test = data.load(args.dataset, "test", batch_size=256, data_dir=args.data_dir,
                         limit=args.test_limit)
        return train, test

    def network(arch, depth, width, nin_variant):
        if arch == "nin":  # Table 1's NIN has batch normalization, as all its networks (§4.1)
            return lambda: models.nin(nin_variant, meta.num_classes, meta.image_shape,
                                      weight_decay=args.weight_decay)
        return lambda: models.wide_resnet(depth, width, meta.num_classes, meta.image_shape,
                                          weight_decay=args.weight_decay)

    teacher = network(args.teacher_arch or args.arch, args.teacher_depth, args.teacher_width,
                      "wide")
    return _training.run(args, "cifar", load_data, teacher,
                         network(args.arch, args.depth, args.width, "thin"))


if __name__ == "__main__":
    main()
