"""examples/quickstart.py, the README's first example: the README shows the file, and it runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "examples", "quickstart.py")


def test_readme_shows_the_file_verbatim():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    with open(QUICKSTART, encoding="utf-8") as f:
        source = f.read()
    assert source in blocks, "README.md's quick-start block differs from examples/quickstart.py"


@pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("CI"),
    reason="apt-get install dataset-fashion-mnist (CI installs it, so there this fails instead)",
)
def test_quickstart_runs_and_prints_both_students_errors():
    # The same file with small sizes: 64 images, students 2 epochs, the teacher 4.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "KERAS_AT_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT,
           "QUICKSTART_LIMIT": "64", "QUICKSTART_EPOCHS": "2"}
    result = subprocess.run([sys.executable, QUICKSTART], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    teacher, students = result.stdout.strip().splitlines()[-2:]
    assert re.fullmatch(r"teacher WRN-16-2: \d+\.\d\d% test error", teacher), teacher
    match = re.fullmatch(r"student WRN-16-1 alone: (\d+\.\d\d)%, with AT: (\d+\.\d\d)%", students)
    assert match, students
    assert all(0 <= float(value) <= 100 for value in match.groups())
