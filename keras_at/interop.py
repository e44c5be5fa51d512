"""Attention transfer as a loss of core Keras's distillation API (`keras.distillation`)."""

from __future__ import annotations

import keras

from keras_at._graph import is_graph_model, list_features
from keras_at.attention import check_attention_args
from keras_at.losses import at_loss
from keras_at.taps import find_named_feature


@keras.saving.register_keras_serializable(package="keras_at")
class AttentionTransfer(keras.distillation.DistillationLoss):
    """Activation-based attention transfer (eq. 2) for one pair of layers, in `keras.distillation`.

    A `keras.distillation.DistillationLoss` for core Keras's
    `keras.distillation.Distiller`: its value is `keras_at.at_loss` (the
    function `keras_at.Distiller` uses) between the attention maps of the
    student's and the teacher's layer outputs. The two maps may differ in
    channels (the map removes them) and in height and width (the teacher's map
    is resized to the student's). Arguments are named and ordered like core's
    `FeatureDistillation`, whose `teacher_layer_name` and `student_layer_name`
    attributes core's Distiller reads to build its feature extractors; use one
    `AttentionTransfer` per pair, and weights of `1e3` (the paper's beta) in
    `distillation_loss_weights`. Core's Distiller scales the sum of its
    distillation losses by `1 - student_loss_weight`.

    Which Distiller to use: `keras_at.Distiller` runs the student forward once
    per step (core's runs it twice: once for the logits, once in its feature
    extractor), taps subclassed models that return a dict of features, layers
    inside nested models (by path, `"backbone/layer"`) and transformer tokens, pairs
    layers automatically (`pairs="auto"`), adds gradient-based AT, flip
    symmetry, KD and hints, and reads its loss weights from variables that
    callbacks such as `keras_at.callbacks.BetaScheduler` change during `fit`.
    `keras.distillation.Distiller` with `AttentionTransfer` is for code already
    written against core's API, or combining AT with core's other losses
    (`LogitsDistillation`, `FeatureDistillation`, your own); it needs
    Functional or Sequential models and top-level layers with 4-D outputs (`auto_pairs`
    names nested layers by path, which core's Distiller cannot reach).

    Args:
        teacher_layer_name: name of the teacher layer with a 4-D `(B, H, W, C)` output.
        student_layer_name: name of the student layer with a 4-D `(B, H', W', C')` output.
        p: exponent of the attention mapping function.
        reduction: `"sum"`, `"mean"` or `"max"` over channels.

    Example:

    ```python
    pairs = keras_at.features.auto_pairs(student, teacher)  # [(student_name, teacher_name)]
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[keras_at.AttentionTransfer(t, s) for s, t in pairs],
        distillation_loss_weights=[1e3] * len(pairs),
        student_loss_weight=0.5,
    )
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    distiller.fit(train_ds, epochs=10)
    ```
    """

    def __init__(
        self,
        teacher_layer_name: str,
        student_layer_name: str,
        p: float = 2,
        reduction: str = "sum",
    ):
        for role, name in (("teacher", teacher_layer_name), ("student", student_layer_name)):
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"`{role}_layer_name` must be the name of a layer with a 4-D output, got "
                    f"{name!r}; attention transfer reads intermediate feature maps, not the "
                    "final outputs."
                )
        p = check_attention_args(p, reduction)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.p = p
        self.reduction = reduction

    def validate_model_compatibility(self, teacher, student):
        """Both models must be graph models holding the named layer with a 4-D output.

        Unlike `FeatureDistillation`, equal output shapes are not required.
        """
        for role, model, name in (
            ("teacher", teacher, self.teacher_layer_name),
            ("student", student, self.student_layer_name),
        ):
            if not is_graph_model(model):
                raise ValueError(
                    f"AttentionTransfer: the {role} {model.name!r} is a subclassed model, and "
                    "keras.distillation.Distiller taps layers of Functional or Sequential "
                    "models only. Use keras_at.Distiller, which taps subclassed models whose "
                    "call() returns {'logits': ..., '<name>': features}."
                )
            try:
                layer = model.get_layer(name)
            except ValueError:
                layer = None
            if layer is None:
                _refuse_nested(model, name, role)
            shape = layer.output.shape
            if len(shape) != 4:
                raise ValueError(
                    f"AttentionTransfer: the {role} layer {name!r} outputs shape {shape}; "
                    "attention transfer needs a 4-D (B, H, W, C) feature map."
                )

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Two 4-D tensors; channels and spatial sizes may differ."""
        for role, outputs in (("teacher", teacher_outputs), ("student", student_outputs)):
            if isinstance(outputs, (dict, list, tuple)) or len(outputs.shape) != 4:
                raise ValueError(
                    f"AttentionTransfer expects one 4-D (B, H, W, C) {role} feature map, got "
                    f"{keras.tree.map_structure(lambda t: t.shape, outputs)}."
                )

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """`keras_at.at_loss(student_outputs, teacher_outputs, p, reduction)`."""
        return at_loss(student_outputs, teacher_outputs, p=self.p, reduction=self.reduction)

    def get_config(self) -> dict:
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            "p": self.p,
            "reduction": self.reduction,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _refuse_nested(model, name: str, role: str):
    """The `ValueError` for a layer core's Distiller cannot reach: nested, or missing.

    Core's Distiller taps `model.get_layer(name).output`, a top-level layer's; a layer inside a
    nested model is not connected to the outer model's input.
    """
    info = find_named_feature(list_features(model, role), name, role, model.name,
                              caller="AttentionTransfer: ")
    raise ValueError(
        f"AttentionTransfer: {name!r} is inside a nested model of the {role} "
        f"{model.name!r} ({[info.name]}), and keras.distillation.Distiller reaches only the "
        "top-level layers (`model.get_layer(name)`). keras_at.Distiller pairs nested "
        "layers by path: pairs=[(student_layer, 'backbone/layer'), ...]."
    )
