"""docs/your_own_models.md runs as written and prints what it shows.

Every ```python block runs, in order, in one namespace, in a temporary folder, offline (random
weights, tiny sizes); a ```text block right after one is its output, compared exactly (a block
without one prints nothing). The ```bash lines that run examples/hub_models.py must parse with
its flags. About 60 s on two shared CPU cores, most of it building and tracing the networks.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "your_own_models.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def fenced_blocks(path: str) -> list[tuple[str, str, int, bool]]:
    """`(language, code, line, follows_previous)` of each fenced block of the Markdown file;
    `follows_previous` when only blank lines separate it from the block before."""
    with open(path) as f:
        text = f.read()
    blocks, end = [], None
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        follows = end is not None and not text[end:match.start()].strip()
        blocks.append((match.group(1), match.group(2), line, follows))
        end = match.end()
    return blocks


def run_python_blocks(path: str) -> list[tuple[int, str, str | None]]:
    """Runs each python block of `path`: `(line, printed, shown)` per block, `shown` the text
    block after it (None without one)."""
    blocks = fenced_blocks(path)
    namespace = {"__name__": "__guide__"}
    results = []
    for i, (language, code, line, _) in enumerate(blocks):
        if language != "python":
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{path}:{line}", "exec"), namespace)
        after = blocks[i + 1] if i + 1 < len(blocks) else None
        shown = after[1] if after and after[0] == "text" and after[3] else None
        results.append((line, printed.getvalue(), shown))
    return results


@pytest.fixture
def guide_session(tmp_path, monkeypatch):
    """A temporary working folder, no downloads, the global dtype policy put back afterwards."""
    pytest.importorskip("keras_hub")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_AT_OFFLINE", "1")
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


@pytest.mark.slow  # trains the guide's networks, about a minute
def test_every_python_block_runs_and_prints_the_output_shown(guide_session):
    results = run_python_blocks(GUIDE)
    assert len(results) >= 8
    for line, printed, shown in results:
        assert printed == (shown or ""), f"the block at line {line} printed:\n{printed}"


def test_the_example_commands_parse():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import hub_models
    finally:
        sys.path.remove(os.path.join(ROOT, "examples"))
    commands = [line.split("#")[0] for language, code, _, _ in fenced_blocks(GUIDE)
                if language == "bash" for line in code.splitlines()]
    commands = [shlex.split(c) for c in commands if c.strip()]
    assert commands and all(c[:2] == ["python", "examples/hub_models.py"] for c in commands)
    for command in commands:
        hub_models.parser().parse_args(command[2:])
