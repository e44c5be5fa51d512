"""What the example scripts share: flags and run directories (the experiment: `_training.py`).

The flags and their defaults (the authors' recipe), the rule that a run directory is never
overwritten silently and `--resume` are written once, here.

A run directory holds `args.json` (the arguments it was started with), `history.json` (every
epoch of every phase), `logs/<phase>/` (TensorBoard, attention maps under `attention/`; only
where TensorFlow, which writes them, is installed),
`<phase>.keras` for each finished phase, and `backup_<phase>/` while a phase is running
(`keras.callbacks.BackupAndRestore`, removed when the phase ends).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time

# TensorFlow where it is installed; JAX where only JAX is (docs/jax_without_tensorflow.md).
os.environ.setdefault("KERAS_BACKEND", "tensorflow" if importlib.util.find_spec("tensorflow")
                      or not importlib.util.find_spec("jax") else "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 or AMX; on others a WRN
# training step is much slower without it (docs/throughput_onednn_off.md beside
# docs/throughput.md).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


from keras_at import data  # noqa: E402
from keras_at.saving import write_text_atomically  # noqa: E402

# Arguments that may differ between a run and its `--resume`.
RESUME_FREE = ("resume", "overwrite", "verbose")

WEIGHT_DECAY_HELP = (
    "coupled L2 weight decay, as Torch's SGD(weight_decay=) in the authors' code: every model "
    "parameter carries an L2 penalty whose gradient wd*w joins the loss gradient before "
    "momentum (the models' weight_decay= argument). keras.optimizers.SGD(weight_decay=) is "
    "not used: it is decoupled and, with momentum 0.9, about 10x weaker"
)


def int_list(text: str) -> tuple[int, ...]:
    """`"60,120,160"` -> `(60, 120, 160)`; `""` -> `()`."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def parse_pairs(text: str):
    """`"auto"`, or `"group1,group2"` / `"s_layer:t_layer,..."` -> a `Distiller` `pairs` list."""
    if text == "auto":
        return "auto"
    pairs = []
    for item in text.split(","):
        student, _, teacher = item.strip().partition(":")
        if not student:
            raise argparse.ArgumentTypeError(f"empty layer name in --pairs {text!r}")
        pairs.append((student, teacher or student))
    return pairs


# === Arguments ===


def add_training_args(parser: argparse.ArgumentParser, **defaults) -> None:
    """The optimisation and bookkeeping flags; `defaults` overrides the authors' CIFAR values."""
    d = {
        "epochs": 200, "batch_size": 128, "lr": 0.1, "lr_epochs": "60,120,160",
        "lr_decay": 0.2, "momentum": 0.9, "nesterov": False, "momentum_reset": True,
        "weight_decay": 5e-4, **defaults,
    }
    g = parser.add_argument_group("training (defaults: the authors' CIFAR recipe, their cifar.py)")
    g.add_argument("--epochs", type=int, default=d["epochs"])
    g.add_argument("--batch-size", type=int, default=d["batch_size"])
    g.add_argument("--lr", type=float, default=d["lr"], help="initial SGD learning rate")
    g.add_argument("--lr-epochs", type=int_list, default=int_list(d["lr_epochs"]),
                   help="the authors' epoch_step: the learning rate is multiplied by --lr-decay "
                   "from each of these epochs on, counted from 1 as in history.json (60: epochs "
                   "1-59 at --lr, epoch 60 on lower); a teacher trained here for "
                   "--teacher-epochs gets the epochs before each drop stretched in proportion")
    g.add_argument("--lr-decay", type=float, default=d["lr_decay"])
    g.add_argument("--momentum", type=float, default=d["momentum"], help="SGD momentum")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=d["nesterov"],
                   help="Nesterov momentum (fb.resnet.torch's, used for the paper's ImageNet runs)")
    g.add_argument("--momentum-reset", action=argparse.BooleanOptionalAction,
                   default=d["momentum_reset"],
                   help="zero the SGD momentum at each --lr-epochs drop, as the authors' code "
                   "does by creating a new optimizer there")
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help=WEIGHT_DECAY_HELP)
    g.add_argument("--seed", type=int, default=0,
                   help="seeds weight initialisation, shuffling and augmentation")
    g.add_argument("--limit", type=int, default=None,
                   help="train on the first N training examples only")
    g.add_argument("--test-limit", type=int, default=None,
                   help="evaluate on the first N test examples only (a fixed subset)")
    g.add_argument("--test-every", type=int, default=1,
                   help="evaluate on the test split (and log attention maps) every N epochs; "
                   "the last epoch is always evaluated")
    g.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                   help="Keras fit verbosity: 2 prints one line per epoch")
    r = parser.add_argument_group("run directory")
    r.add_argument("--out", default=None,
                   help="run directory (default: a new runs/<script>-<time> folder)")
    r.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out, with the same arguments")
    r.add_argument("--overwrite", action="store_true",
                   help="delete an existing --out and start again")


def add_teacher_args(parser: argparse.ArgumentParser,
                     teacher_files: str = ".keras file") -> argparse._ArgumentGroup:
    """The teacher's flags, in a group that a script adds its own teacher flags to."""
    g = parser.add_argument_group("teacher")
    g.add_argument("--teacher", default=None,
                   help=f"a trained teacher {teacher_files}; without it, the teacher is trained "
                   "first into the run directory")
    g.add_argument("--teacher-epochs", type=int, default=None,
                   help="epochs of the teacher trained here (default: --epochs)")
    g.add_argument("--teacher-only", action="store_true",
                   help="train the teacher into --out and stop (then pass it as --teacher)")
    return g


def add_transfer_args(parser: argparse.ArgumentParser, beta: float = 1e3,
                      pairs: str = "auto") -> None:
    """The Distiller's loss weights and attention mapping function."""
    g = parser.add_argument_group("transfer (the Distiller)")
    g.add_argument("--beta", type=float, default=beta,
                   help="attention-transfer weight: the loss adds beta * sum of at_loss over "
                   "pairs (paper: 1e3; 0 turns AT off)")
    g.add_argument("--alpha", type=float, default=0.0,
                   help="knowledge-distillation weight: (1-alpha)*task + alpha*KD "
                   "(paper: 0.9; 0 turns KD off)")
    g.add_argument("--temperature", type=float, default=4.0, help="KD temperature (paper: 4)")
    g.add_argument("--beta-decay", type=float, default=None,
                   help="multiply beta and hint_beta by this at each --lr-epochs drop. The "
                   "paper decays beta during training for AT+KD and for F-ActT but gives no "
                   "schedule (the authors' code has none); the default, 0.2 for AT combined "
                   "with KD and for F-ActT (hint_beta), else 1, is this library's choice; 1 "
                   "never decays")
    g.add_argument("--attention", default="sum", choices=("sum", "mean", "max"),
                   help="reduction over channels of the attention map |A|^p (Table 2)")
    g.add_argument("--p", type=float, default=2.0, help="exponent p of the attention map")
    g.add_argument("--pairs", type=parse_pairs, default=parse_pairs(pairs),
                   help="'auto' (every group), or layers to pair, e.g. group1,group2 or "
                   "student_layer:teacher_layer,...")
    g.add_argument("--hint-beta", type=float, default=0.0,
                   help="full-activation transfer weight (F-ActT, FitNets-style hints on the same "
                   "pairs, l2-normalised, 1x1 adapters only where widths differ; the paper gives "
                   "no value: reproduce.py uses 1e3, beta's value, our choice)")


def add_folder_args(parser: argparse.ArgumentParser, image_size: int = 224) -> None:
    """An image folder with split sub-folders (DIR/train/<class>/*, DIR/test/<class>/*), or a
    CUB-200-2011 folder (its own files: `keras_at.data.cub`)."""
    parser.add_argument("data", help="image folder: DIR/train/<class>/*.jpg and DIR/test/<class>/ "
                        "(or DIR/val/<class>/); or a CUB-200-2011 folder (images.txt, "
                        "bounding_boxes.txt, train_test_split.txt, ...)")
    parser.add_argument("--test-split", default=None,
                        help="the split evaluated after every epoch (default: test, else val)")
    parser.add_argument("--image-size", type=int, default=image_size,
                        help="training: random crops of this size (image folders: random-resized; "
                        "CUB: of the box rescaled to 256/224 of it); evaluation: the central "
                        "crop after the shorter side is rescaled to 256/224 of it")


def folder_data(args):
    """`load_data` for `run`: (train, test) of the image folder or CUB folder `args.data`."""
    if data.cub.is_cub(args.data):
        split = args.test_split or "test"
    else:
        split = args.test_split or next(
            (s for s in ("test", "val") if os.path.isdir(os.path.join(args.data, s))), None)
        if split is None or not os.path.isdir(os.path.join(args.data, "train")):
            sys.exit(f"{args.data} needs train/ and test/ (or val/) sub-folders of class folders "
                     "(or CUB-200-2011's images.txt); a held-out split must not be cut from "
                     "train/, whose files are in class order.")

    def load():
        # Without augmentation, load() evaluates the single central crop (keras_at.data.load).
        train = data.load(args.data, "train", batch_size=args.batch_size, seed=args.seed,
                          limit=args.limit, image_size=args.image_size)
        test = data.load(args.data, split, batch_size=args.batch_size, augment=False,
                         shuffle=False, limit=args.test_limit, image_size=args.image_size)
        return train, test

    return load


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.teacher_only and args.teacher:
        parser.error("--teacher-only trains a teacher; it cannot be given one with --teacher.")
    return args


# === Run directories ===


def default_out(script: str) -> str:
    return os.path.join("runs", f"{script}-{time.strftime('%Y%m%d-%H%M%S')}")


def prepare_run_dir(args, script: str) -> str:
    """Creates (or, with --resume, checks) the run directory and records the arguments.

    An existing non-empty directory is refused unless `--resume` (same arguments, continue)
    or `--overwrite` (delete it first) is given.
    """
    out = args.out or default_out(script)
    if args.resume and args.overwrite:
        sys.exit("--resume and --overwrite exclude each other.")
    config = {k: v for k, v in vars(args).items() if k not in RESUME_FREE}
    config = json.loads(json.dumps(config))  # tuples -> lists, as read back from the file
    path = os.path.join(out, "args.json")
    exists = os.path.isdir(out) and bool(os.listdir(out))
    if exists and args.overwrite:
        shutil.rmtree(out)
    elif exists and not args.resume:
        sys.exit(
            f"Run directory {out} already exists and is not empty; refusing to overwrite it. "
            "Pass --resume to continue that run, --overwrite to replace it, or another --out."
        )
    elif exists and os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        changed = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
        changed.pop("out", None)
        if changed:
            diff = ", ".join(f"{k}: run has {a!r}, given {b!r}" for k, (a, b) in changed.items())
            sys.exit(f"--resume needs the arguments the run in {out} was started with ({diff}).")
    elif args.resume:
        print(f"--resume: nothing to resume in {out}; starting a new run.")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump({**config, "out": out}, f, indent=1)
    return out


def read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def write_json(path: str, value) -> None:
    """Writes through a temporary file, so a killed process never leaves half a file."""
    write_text_atomically(path, json.dumps(value, indent=1))
