"""The authors' PyTorch training step, rebuilt to be timed beside keras-at in the same run.

The paper's code (github.com/szagoruyko/attention-transfer, `cifar.py` and
`utils.py`) is functional PyTorch: a pre-activation WRN written with
`F.conv2d` / `F.batch_norm` on dicts of tensors, NCHW, the teacher run in
inference mode, `at(x) = l2_normalize(x.pow(2).mean(1).view(B, -1))`, loss
`CE + beta/2 * sum over groups of (at(s) - at(t)).pow(2).mean()`, SGD with
momentum 0.9 and coupled weight decay 5e-4. This module builds the same
networks and steps (written for this benchmark, not copied), so that the
speed-up over the authors' code is a ratio measured in one run on one machine
rather than a figure taken on another day.

PyTorch is optional: `available()` says whether it imports.
"""

from __future__ import annotations

import math

VARIANTS = ("torch_student", "torch_teacher_forward", "torch_at")


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import torch

    return torch.__version__


def _wrn(depth, width, num_classes, generator):
    """(forward, params) of the authors' functional WRN-depth-width; `forward(x, training)`
    returns the logits and the three group outputs."""
    import torch
    import torch.nn.functional as F

    n = (depth - 4) // 6
    widths = [int(16 * width), int(32 * width), int(64 * width)]
    params, stats = {}, {}

    def conv(name, ni, no, k):
        std = math.sqrt(2.0 / (ni * k * k))  # He normal, as the authors' conv_params
        params[name] = torch.randn(no, ni, k, k, generator=generator) * std

    def bn(name, c):
        params[name + ".weight"] = torch.rand(c, generator=generator)
        params[name + ".bias"] = torch.zeros(c)
        stats[name + ".running_mean"] = torch.zeros(c)
        stats[name + ".running_var"] = torch.ones(c)

    conv("conv0", 3, 16, 3)
    ni = 16
    for g, no in enumerate(widths):
        for i in range(n):
            base = f"group{g}.block{i}"
            c_in = ni if i == 0 else no
            conv(base + ".conv0", c_in, no, 3)
            conv(base + ".conv1", no, no, 3)
            bn(base + ".bn0", c_in)
            bn(base + ".bn1", no)
            if c_in != no:
                conv(base + ".convdim", c_in, no, 1)
        ni = no
    bn("bn", widths[2])
    params["fc.weight"] = torch.randn(num_classes, widths[2], generator=generator) * math.sqrt(
        2.0 / widths[2]
    )
    params["fc.bias"] = torch.zeros(num_classes)

    def act(x, name, training):
        return F.relu(F.batch_norm(
            x, stats[name + ".running_mean"], stats[name + ".running_var"],
            params[name + ".weight"], params[name + ".bias"], training, 0.1, 1e-5,
        ))

    def forward(x, training):
        o = F.conv2d(x, params["conv0"], padding=1)
        groups = []
        for g in range(3):
            for i in range(n):
                base = f"group{g}.block{i}"
                stride = 2 if g > 0 and i == 0 else 1
                o1 = act(o, base + ".bn0", training)
                y = F.conv2d(o1, params[base + ".conv0"], stride=stride, padding=1)
                z = F.conv2d(act(y, base + ".bn1", training), params[base + ".conv1"], padding=1)
                shortcut = base + ".convdim"
                o = z + (F.conv2d(o1, params[shortcut], stride=stride)
                         if shortcut in params else o)
            groups.append(o)
        o = F.adaptive_avg_pool2d(act(o, "bn", training), 1).flatten(1)
        return F.linear(o, params["fc.weight"], params["fc.bias"]), groups

    return forward, params


def _attention(x):
    import torch.nn.functional as F

    return F.normalize(x.pow(2).mean(1).flatten(1))


def build(variant, seed=0):
    """A callable `step(x, y)` for one variant; `x` NHWC float32 numpy, `y` int labels."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    student, s_params = _wrn(16, 1, 10, generator)
    teacher, t_params = _wrn(16, 2, 10, generator)
    for p in s_params.values():
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(list(s_params.values()), 0.1, momentum=0.9, weight_decay=5e-4)
    beta = 1e3

    def tensors(x, y):
        return (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
                torch.from_numpy(y).long())

    def teacher_forward(x, y):
        with torch.no_grad():
            return teacher(tensors(x, y)[0], False)[0]

    def train(x, y, transfer):
        images, labels = tensors(x, y)
        logits, s_groups = student(images, True)
        loss = F.cross_entropy(logits, labels)
        if transfer:
            with torch.no_grad():
                _, t_groups = teacher(images, False)
            loss = loss + beta / 2 * sum(
                (_attention(s) - _attention(t)).pow(2).mean() for s, t in zip(s_groups, t_groups)
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    if variant == "torch_student":
        return lambda x, y: train(x, y, False)
    if variant == "torch_teacher_forward":
        return teacher_forward
    if variant == "torch_at":
        return lambda x, y: train(x, y, True)
    raise ValueError(f"Unknown PyTorch variant {variant!r}; choose from {VARIANTS}.")
