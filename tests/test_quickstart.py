"""examples/quickstart.py, the README's first example: the README shows the file, and it runs
and prints its networks' errors."""

from __future__ import annotations

import os
import re
import runpy

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "examples", "quickstart.py")


def test_readme_shows_the_file_verbatim():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    with open(QUICKSTART, encoding="utf-8") as f:
        source = f.read()
    assert source in blocks, "README.md's quick-start block differs from examples/quickstart.py"


@pytest.mark.slow  # trains three networks for epochs
@pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("CI"),
    reason="apt-get install dataset-fashion-mnist (CI installs it, so there this fails instead)",
)
def test_quickstart_runs_and_prints_both_students_errors(monkeypatch, capsys):
    # The same file with small sizes: 64 images, students 2 epochs, the teacher 4. Run as
    # `python examples/quickstart.py` runs it, but here, to read its networks afterwards.
    for name, value in {"KERAS_AT_OFFLINE": "1", "QUICKSTART_LIMIT": "64",
                        "QUICKSTART_EPOCHS": "2"}.items():
        monkeypatch.setenv(name, value)
    script = runpy.run_path(QUICKSTART, run_name="__main__")
    teacher, students = capsys.readouterr().out.strip().splitlines()[-2:]
    match = re.fullmatch(r"teacher WRN-16-2: (\d+\.\d\d)% test error", teacher)
    assert match, teacher
    printed = [match.group(1)]
    match = re.fullmatch(r"student WRN-16-1 alone: (\d+\.\d\d)%, with AT: (\d+\.\d\d)%", students)
    assert match, students
    printed += match.groups()
    # Each number is its network's error on the 2000 test images, counted here.
    x, y = (np.concatenate(part) for part in zip(*((images.numpy(), labels.numpy())
                                                     for images, labels in script["test"])))
    assert len(y) == 2000
    for name, value in zip(("teacher", "alone", "student"), printed):
        wrong = np.mean(script[name].predict(x, verbose=0).argmax(-1) != y)
        assert float(value) == pytest.approx(100 * wrong, abs=0.01), name
    # From the same initialisation and data order, AT trained the second student otherwise.
    assert not all(np.array_equal(a, b) for a, b in zip(script["alone"].get_weights(),
                                                        script["student"].get_weights()))
