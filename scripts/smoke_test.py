"""Builds keras-at's wheel and sdist, installs the wheel in a fresh venv and uses it from there.

The tests run against the checkout, where a module, a data file or a dependency missing from
the package goes unnoticed. This script is what a user gets instead:

1. `python -m build` writes `dist/*.whl` and `dist/*.tar.gz` (the `build` package is in the
   `test` extra);
2. checks what they hold: the sdist has README, LICENSE, CHANGELOG, the package and every file
   the README links, and no `runs/`, `.venv`, CI files or bytecode; the wheel has every file of
   the package the sdist has, the license, and nothing outside `keras_at/`;
3. creates a virtual environment in a temporary folder outside the checkout and installs the
   wheel alone there (no extras: the core package must import without them), with uv where it
   is installed, else pip; its dependencies from `--find-links` (make smoke: the wheels `make`
   fetched into .wheels/) or else from PyPI;
4. runs this script again with that venv's Python, from the temporary folder and with
   PYTHONPATH unset (`--inside`), which checks that `keras_at` comes from the venv, then
   imports it, loads `keras_at.data.load("digits")`, builds a WRN-16-1 / WRN-16-2 pair, fits
   one `keras_at.Distiller` step and one step of the guide's `keras.distillation.Distiller`
   snippet with `keras_at.AttentionTransfer`, read from docs/distiller.md and run as written.

    make smoke                                  # or: .venv/bin/python scripts/smoke_test.py
    .venv/bin/python scripts/smoke_test.py --keep   # keep the venv, print where it is

Its output names no test counts, so that CI's last test-runner line stays pytest's.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The guide's page that shows core Keras's Distiller with keras_at.AttentionTransfer.
CORE_SNIPPET_PAGE = Path("docs") / "distiller.md"
# In the sdist, below its top folder `keras_at-X.Y.Z/`.
SDIST_REQUIRED = ("README.md", "LICENSE", "CHANGELOG.md", "setup.py", "pyproject.toml",
                  "keras_at/__init__.py", "keras_at/_version.py")
SDIST_FORBIDDEN = re.compile(
    r"(^|/)(runs|results|\.venv|venv|\.wheels|dist|build|\.ci|\.git|__pycache__|\.pytest_cache|"
    r"\.ruff_cache)(/|$)|\.py[cod]$"
)


class SmokeError(Exception):
    """What the installed package got wrong."""


def check(condition, message):
    if not condition:
        raise SmokeError(message)


def say(message):
    print(f"smoke: {message}", flush=True)


# ---------------------------------------------------------------- outside: build and install


def run(command, log, **kwargs):
    """Runs `command`, its output into `log`; on failure raises with the output's tail."""
    with open(log, "w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if result.returncode != 0:
        tail = Path(log).read_text(errors="replace")[-4000:]
        raise SmokeError(f"{' '.join(map(str, command))} exited {result.returncode}:\n{tail}")


def readme_links(readme_text):
    """Relative files the README links or shows (`](docs/x.png)`, `](docs/x.md#part)`), as sdist
    paths."""
    targets = re.findall(r"\]\(([^)\s]+)\)", readme_text)
    return sorted({t.split("#")[0] for t in targets if "://" not in t and not t.startswith("#")})


def check_sdist(sdist, readme_text):
    with tarfile.open(sdist) as tar:
        files = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    missing = [f for f in (*SDIST_REQUIRED, *readme_links(readme_text)) if f not in files]
    check(not missing, f"{sdist.name} lacks {missing}")
    unwanted = sorted(f for f in files if SDIST_FORBIDDEN.search(f))
    check(not unwanted, f"{sdist.name} holds files a user does not need: {unwanted[:20]}")
    return {f for f in files if f.startswith("keras_at/")}


def check_wheel(wheel, package_files):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    dist_info = [n for n in names if n.split("/")[0].endswith(".dist-info")]
    outside = sorted(n for n in names if not n.startswith("keras_at/") and n not in dist_info)
    check(not outside, f"{wheel.name} installs files outside keras_at/: {outside[:20]}")
    missing = sorted(package_files - names)
    check(not missing, f"{wheel.name} lacks package files the sdist has: {missing}")
    check(any(n.endswith("licenses/LICENSE") for n in dist_info), f"{wheel.name} has no LICENSE")


def install_command(python, work):
    """(`pip install` into the venv of `python`, the installer's name): uv where it is installed
    (the test extra has it), else this Python's pip; neither needs a pip in the venv."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        uv = shutil.which("uv")
    if uv:
        # uv unpacks the wheels (TensorFlow: 1.8 GB) faster than pip. Its cache lives and
        # goes with the venv (hard links between the two), so nothing is left behind.
        command = [uv, "pip", "install", "--quiet", "--python", python,
                   "--cache-dir", work / "uv-cache"]
        return command, "uv"
    # --no-compile: Python compiles what the checks import, not all of TensorFlow.
    command = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
               "--no-compile"]
    return command, "pip"


def build_and_install(keep, find_links=None):
    timings = {}
    readme_text = (ROOT / "README.md").read_text(encoding="utf-8")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="keras-at-smoke-")).resolve()
    check(ROOT not in work.parents, f"the temporary folder {work} is inside the checkout")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        start = time.monotonic()
        run([sys.executable, "-m", "build", "--outdir", dist, ROOT], work / "build.log", env=env)
        timings["build"] = time.monotonic() - start
        (wheel,) = dist.glob("*.whl")
        (sdist,) = dist.glob("*.tar.gz")
        package_files = check_sdist(sdist, readme_text)
        check_wheel(wheel, package_files)
        say(f"built {wheel.name} and {sdist.name}; their contents check out")

        start = time.monotonic()
        venv = work / "venv"
        run([sys.executable, "-m", "venv", "--without-pip", venv], work / "venv.log", env=env)
        python = venv / "bin" / "python"
        install, installer = install_command(python, work)
        install.append(wheel)
        if find_links:  # the dependencies' wheels, offline
            install += ["--no-index", "--find-links", find_links]
        run(install, work / "install.log", env=env)
        timings["install"] = time.monotonic() - start
        say(f"installed the wheel into {venv} with {installer} in {timings['install']:.0f} s")

        # A copy, so that not even the script's own folder (sys.path[0]) is in the checkout.
        script = shutil.copy(__file__, work / "smoke_test.py")
        start = time.monotonic()
        inside = [python, script, "--inside", "--checkout", ROOT]
        result = subprocess.run(inside, cwd=work, env=env)
        timings["checks"] = time.monotonic() - start
        check(result.returncode == 0, f"the checks in the fresh venv exited {result.returncode}")
    except BaseException:
        say(f"error; the build, the venv and their logs are kept in {work}")
        raise
    if keep:
        say(f"kept {work}")
    else:
        start = time.monotonic()
        shutil.rmtree(work)
        timings["cleanup"] = time.monotonic() - start
    return timings


# ---------------------------------------------------------------- inside the fresh venv


def core_snippet(page):
    """The page's first python block that builds `keras.distillation.Distiller` with
    `keras_at.AttentionTransfer`."""
    blocks = re.findall(r"```python\n(.*?)```", Path(page).read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks
             if "keras.distillation.Distiller(" in b and "keras_at.AttentionTransfer(" in b]
    check(found, f"{page} has no python block with keras.distillation.Distiller( and "
          "keras_at.AttentionTransfer(")
    return found[0]


def run_snippet(source, namespace):
    """Runs `source` as written; returns the value of its last line if that is an expression,
    else the `keras.distillation.Distiller` it assigned."""
    import keras

    tree = ast.parse(source)
    last = tree.body[-1] if isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body.pop()
    exec(compile(tree, str(CORE_SNIPPET_PAGE), "exec"), namespace)
    if last is not None:
        return eval(compile(ast.Expression(last.value), str(CORE_SNIPPET_PAGE), "eval"), namespace)
    found = [v for v in namespace.values() if isinstance(v, keras.distillation.Distiller)]
    check(len(found) == 1, "the guide's snippet leaves no keras.distillation.Distiller")
    return found[0]


def finite(history, key):
    value = history[key][-1]
    check(math.isfinite(value), f"{key} is {value} after one step")
    return value


def inside_checks(checkout):
    for name, value in (("KERAS_BACKEND", "tensorflow"), ("TF_CPP_MIN_LOG_LEVEL", "2")):
        os.environ.setdefault(name, value)
    checkout = Path(checkout).resolve()
    check(not any(Path(p or ".").resolve() == checkout for p in sys.path),
          f"the checkout {checkout} is on sys.path")
    import importlib.metadata

    import keras

    import keras_at

    location = Path(keras_at.__file__).resolve()
    prefix = Path(sys.prefix).resolve()
    check(prefix in location.parents, f"keras_at imported from {location}, not the venv {prefix}")
    installed = importlib.metadata.version("keras-at")
    check(installed == keras_at.__version__,
          f"keras_at.__version__ {keras_at.__version__} but the wheel says {installed}")
    say(f"keras_at {installed} imported from {location.parent}")

    shape = keras_at.data.info("digits").image_shape
    train = keras_at.data.load("digits", split="train", batch_size=32, seed=0)
    images, labels = next(iter(train))
    check(tuple(images.shape) == (32, *shape), f"digits batch of shape {images.shape}")
    check(int(labels.numpy().max()) < 10, "digits labels beyond 9")
    say(f"keras_at.data.load('digits'): batches of {tuple(images.shape)}")

    keras.utils.set_random_seed(0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher = keras_at.models.wide_resnet(16, 2, input_shape=shape)
    student = keras_at.models.wide_resnet(16, 1, input_shape=shape)
    distiller = keras_at.Distiller(student, teacher, beta=1e3, alpha=0.9)
    check(distiller.pairs == [(f"group{i}", f"group{i}") for i in range(3)],
          f"WRN pairs {distiller.pairs}")
    distiller.compile(keras.optimizers.SGD(0.01, momentum=0.9), ce, jit_compile=False)
    history = distiller.fit(train.take(1), epochs=1, verbose=0, shuffle=False).history
    at = finite(history, "at_loss")
    check(at > 0, f"at_loss {at} between an untrained WRN-16-1 and WRN-16-2")
    say(f"keras_at.Distiller, WRN-16-1 <- WRN-16-2, one step: loss {finite(history, 'loss'):.3f}, "
        f"at_loss {at:.4f}, kd_loss {finite(history, 'kd_loss'):.3f}")

    namespace = {"keras": keras, "keras_at": keras_at, "teacher": teacher, "student": student}
    core = run_snippet(core_snippet(checkout / CORE_SNIPPET_PAGE), namespace)
    check(isinstance(core, keras.distillation.Distiller), f"the guide's snippet gave {core!r}")
    core.compile(optimizer=keras.optimizers.SGD(0.01), loss=ce, jit_compile=False)
    history = core.fit(train.take(1), epochs=1, verbose=0, shuffle=False).history
    say(f"{CORE_SNIPPET_PAGE}'s keras.distillation.Distiller with keras_at.AttentionTransfer, "
        f"one step: loss {finite(history, 'loss'):.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary venv")
    parser.add_argument("--find-links", type=Path, help="install the dependencies from this "
                        "folder of wheels, offline (make smoke: the one `make` fills)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkout", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        if args.inside:
            inside_checks(args.checkout)
            return
        start = time.monotonic()
        timings = build_and_install(args.keep, args.find_links)
    except SmokeError as error:
        say(f"error: {error}")
        sys.exit(1)
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    say(f"the installed wheel works ({parts}; {time.monotonic() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
