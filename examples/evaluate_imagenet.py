"""Single-crop ImageNet top-1 / top-5 of a model: the authors' released weights or a .keras file.

The evaluation of fb.resnet.torch and of the authors' code: the shorter side resized to 256, the
central 224x224 crop (in proportion for other --image-size), pixels scaled to [0, 1] and
normalised with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)
(`keras_at.data.load` of an image folder without augmentation). Class i is the i-th of the
sorted class-folder names (the synsets n01440764 ... n15075141 for ImageNet), the order of
torchvision's `ImageFolder` that the authors' weights were trained with.

The folder: DIR/val/<class>/*.JPEG (with DIR/train/<class>/, whose folder names are then the
classes), or the validation folder itself, VAL/<class>/*.JPEG. The authors report, top-1 / top-5
error %: ResNet-34 (resnet-34-export.pth) 26.7 / 8.7, ResNet-18 with AT
(resnet-18-at-export.pth) 29.3 / 10.0.

    python examples/evaluate_imagenet.py /data/imagenet --authors-weights resnet-18-at-export.pth
    python examples/evaluate_imagenet.py /data/imagenet/val --model runs/imagenet-at/student.keras
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402, F401  (the environment the examples run TensorFlow in)
import keras  # noqa: E402

from keras_at import data, models  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", help="DIR holding val/<class>/ (and train/<class>/), or the "
                   "validation folder itself, VAL/<class>/")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--authors-weights", default=None,
                       help="the authors' released weights, .pth (needs PyTorch) or .npz "
                       "(keras_at.models.load_authors_resnet)")
    which.add_argument("--model", default=None, help="a .keras model of logits")
    p.add_argument("--split", default="val",
                   help="the split sub-folder of DIR evaluated, when DIR has train/")
    p.add_argument("--image-size", type=int, default=224,
                   help="the central crop, after the shorter side is resized to 256/224 of it")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    return p


def folder_and_split(path: str, split: str) -> tuple[str, str]:
    """The `keras_at.data.load` name and split of the images to evaluate."""
    if os.path.isdir(os.path.join(path, "train")):
        return path, split
    if os.path.isdir(os.path.join(path, split)):
        path = os.path.join(path, split)
    # A folder of class folders alone is what keras_at.data calls the "train" split.
    return path, "train"


def load_model(args) -> keras.Model:
    if args.authors_weights:
        shape = (args.image_size, args.image_size, 3)
        return models.load_authors_resnet(args.authors_weights, input_shape=shape)
    return keras.saving.load_model(args.model, compile=False)


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    folder, split = folder_and_split(args.data, args.split)
    classes = data.info(folder).num_classes
    model = load_model(args)
    outputs = model.output.shape[-1]
    if outputs < classes:
        sys.exit(f"{model.name} has {outputs} logits, fewer than the {classes} class folders of "
                 f"{folder}.")
    if outputs != classes:
        print(f"Note: {model.name} has {outputs} logits and {folder} {classes} class folders; "
              "folder i (sorted by name) is scored as logit i.")
    images = data.load(folder, split, batch_size=args.batch_size, augment=False, shuffle=False,
                       limit=args.limit, image_size=args.image_size)
    hits, count = {1: 0, 5: 0}, 0
    for batch, labels in images:
        logits = model.predict_on_batch(batch)
        for k in hits:
            hits[k] += int(keras.ops.sum(keras.ops.cast(keras.ops.in_top_k(labels, logits, k),
                                                        "int32")))
        count += int(labels.shape[0])
    top1, top5 = hits[1] / count, hits[5] / count
    where = folder if split == "train" else os.path.join(folder, split)
    print(f"{args.authors_weights or args.model} on {count} images of {where} "
          f"({args.image_size}x{args.image_size} central crop): top-1 accuracy "
          f"{100 * top1:.2f}%, top-5 accuracy {100 * top5:.2f}% (error {100 * (1 - top1):.2f} / "
          f"{100 * (1 - top5):.2f})")
    return {"images": count, "top1": top1, "top5": top5}

if __name__ == "__main__":
    main()
