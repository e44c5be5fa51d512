"""The Distiller's loss of one batch, term by term, and their sum: the README's formula.

    loss = (1 - alpha) * task + alpha * kd
           + beta * sum_pairs at_loss + hint_beta * sum_pairs hint_loss
           + grad_beta * grad_at_loss + symmetry_beta * symmetry_loss
           + input_grad_penalty * input_grad_loss
           + symmetry_output_beta * symmetry_output_loss
           + the student's own regularisation losses

Each term is named once, by its history key (`"at_loss"`: eq. 2 summed over the pairs,
`"grad_at_loss"`: eq. 4, `"symmetry_loss"`: eq. 6, ...), and is a per-replica weighted mean,
`sum_b w_b * term_b / B` (`keras_at.losses.weighted_mean`). Only the active terms are computed:
an inactive term's weight is 0, so it adds nothing to the sum.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_at.gradient_at import forward, forward_with_input_gradient, step_gradients
from keras_at.losses import (
    at_loss_per_example,
    hint_loss_per_example,
    input_gradient_distance_per_example,
    kd_loss_per_example,
    symmetry_output_loss_per_example,
    task_loss,
    weighted_mean,
)
from keras_at.pairs import layer_safe
from keras_at.settings import TERMS

# Terms that read the activation pairs.
PAIR_TERMS = ("at_loss", "hint_loss")
# Terms that need the student's input gradient J_S (an inner tape).
GRADIENT_TERMS = ("grad_at_loss", "symmetry_loss", "input_grad_loss")
# Terms that read the teacher's forward pass.
TEACHER_TERMS = ("at_loss", "kd_loss", "hint_loss")


def switch_on(active: set, weight: str, value, has_pairs: bool) -> bool:
    """Adds the term `weight` multiplies to `active` (the terms the step computes) when `value`
    is not 0 (and, for a pair term, there are pairs); True if it was not there.

    A term once on stays in the step: a schedule may set its weight to 0 for a while.
    """
    term = TERMS[weight]
    if value == 0 or term in active or (term in PAIR_TERMS and not has_pairs):
        return False
    active.add(term)
    return True


def hint_adapters(pairs, student, teacher, weight_decay: float = 0.0) -> list:
    """F-ActT's 1×1 convolutions mapping student channels to teacher channels, per pair.

    None for a pair whose channel counts agree. `student` and `teacher` are the tap models;
    `weight_decay` is the coupled L2 decay of the kernels (an `L2(weight_decay / 2)` penalty).
    """
    adapters = []
    _, *s_feats = student.outputs
    _, *t_feats = teacher.outputs
    for (s_name, _), s_f, t_f in zip(pairs, s_feats, t_feats):
        if s_f.shape[-1] == t_f.shape[-1]:
            adapters.append(None)
            continue
        conv = keras.layers.Conv2D(
            t_f.shape[-1], 1, use_bias=False, kernel_initializer="he_normal",
            kernel_regularizer=keras.regularizers.L2(weight_decay / 2) if weight_decay else None,
            name=f"hint_adapter_{layer_safe(s_name)}",
        )
        conv.build(s_f.shape)
        adapters.append(conv)
    return adapters


def teacher_outputs(tap, x, y, loss, active, cached=None):
    """Teacher logits, features and J_T; with `cached` J_T, a forward pass only if needed.

    Everything is outside the weights' gradient: the teacher is frozen.
    """
    fresh = "grad_at_loss" in active and cached is None
    logits, features, jacobian = None, [], None
    if fresh:
        logits, features, jacobian, _ = forward_with_input_gradient(
            tap, x, y, loss, training=False
        )
    elif active & set(TEACHER_TERMS):
        logits, features = forward(tap, x, training=False)
    if logits is not None:
        logits, features = ops.stop_gradient(logits), [ops.stop_gradient(f) for f in features]
    if cached is not None:
        jacobian = step_gradients(cached, loss)
    return logits, features, None if jacobian is None else ops.stop_gradient(jacobian)


def compute_terms(student, teacher, x, y, sample_weight, training, *, loss, active, p,
                  reduction, temperature, hint_adapters, weights=None, cached=None):
    """`(student logits, {history key: per-replica weighted mean})` of the active terms.

    `student` and `teacher` are the tap models (`[logits, *features]`), `loss` the compiled
    task loss, `active` the set of term names to compute, `weights` the `(B,)` sample weights
    (`sample_weight` as one float32 weight per example) of every term, the task loss's too (every
    position of per-position outputs), `cached` the teacher's precomputed J_T or None.
    """
    t_logits, t_features, t_jacobian = teacher_outputs(teacher, x, y, loss, active, cached)
    jacobian = task = None
    if active & set(GRADIENT_TERMS):
        logits, features, jacobian, task = forward_with_input_gradient(
            student, x, y, loss, training
        )
    else:
        logits, features = forward(student, x, training)
    per_example = {}
    if "at_loss" in active:
        per_example["at_loss"] = sum(
            at_loss_per_example(s, t, p=p, reduction=reduction)
            for s, t in zip(features, t_features)
        )
    if "hint_loss" in active:
        per_example["hint_loss"] = sum(
            hint_loss_per_example(a(s) if a is not None else s, t)
            for a, s, t in zip(hint_adapters, features, t_features)
        )
    if "kd_loss" in active:
        per_example["kd_loss"] = kd_loss_per_example(logits, t_logits, temperature)
    if "grad_at_loss" in active:
        per_example["grad_at_loss"] = input_gradient_distance_per_example(jacobian, t_jacobian)
    flipped_logits = None
    if "symmetry_loss" in active:
        flipped_logits, _, flipped, _ = forward_with_input_gradient(
            student, x, y, loss, training, flip=True
        )
        per_example["symmetry_loss"] = input_gradient_distance_per_example(jacobian, flipped)
    if "input_grad_loss" in active:
        per_example["input_grad_loss"] = input_gradient_distance_per_example(jacobian)
    if "symmetry_output_loss" in active:
        if flipped_logits is None:  # eq. 6 off: a forward pass on flip(x), no inner tape
            flipped_logits, _ = forward(student, x, training, flip=True)
        if len(logits.shape) == 4:  # per-pixel outputs: s(flip x) flipped back to x's pixels
            flipped_logits = ops.flip(flipped_logits, axis=2)
        per_example["symmetry_output_loss"] = symmetry_output_loss_per_example(
            logits, flipped_logits
        )
    task_weights = sample_weight if weights is None else weights
    if task is None or task_weights is not None:  # the inner tape's mean is unweighted
        task = task_loss(loss, y, logits, task_weights)
    terms = {"task_loss": task}
    for name, values in per_example.items():
        terms[name] = weighted_mean(values, weights)
    return logits, terms


def total_loss(terms, w, regularization=()):
    """The README's formula: each computed term times its weight (`w`, by weight name), summed.

    A term missing from `terms` was not computed (its weight is 0) and adds no op to the step.
    `regularization` is a list of further losses (`regularization`).
    """

    def weighted(weight, term):
        return w[weight] * terms[term] if term in terms else None

    task = terms["task_loss"]
    if "kd_loss" in terms:
        task = (1.0 - w["alpha"]) * task
    return _sum(
        task, weighted("alpha", "kd_loss"),
        weighted("beta", "at_loss"), weighted("hint_beta", "hint_loss"),
        weighted("grad_beta", "grad_at_loss"), weighted("symmetry_beta", "symmetry_loss"),
        weighted("input_grad_penalty", "input_grad_loss"),
        weighted("symmetry_output_beta", "symmetry_output_loss"),
        *regularization,
    )


def _sum(first, *rest):
    """`first + rest[0] + ...`, left to right, skipping the Nones (terms not computed)."""
    for value in rest:
        if value is not None:
            first = first + value
    return first


def regularization(student, hint_adapters, hint_beta, hint_on: bool) -> list:
    """The student's own losses, and the hint adapters' decay while F-ActT is on."""
    losses = []
    if student.losses:
        losses.append(ops.sum([ops.cast(r, "float32") for r in student.losses]))
    decay = [r for a in hint_adapters if a is not None for r in a.losses]
    if decay and hint_on:  # the adapters' decay, while they are used
        decay = ops.sum([ops.cast(r, "float32") for r in decay])
        losses.append(ops.where(hint_beta > 0, decay, 0.0))
    return losses
