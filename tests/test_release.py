"""Release metadata: one version, a license the metadata matches, a changelog that has it.

The build and a fresh install of the wheel are `make smoke` (scripts/smoke_test.py), in CI:
too slow for the suite.
"""

import re
import runpy
import sys
from pathlib import Path

import pytest
import setuptools

import keras_at

ROOT = Path(__file__).resolve().parent.parent


def run_setup_py(path: Path, globals_: dict | None = None) -> dict:
    """The keyword arguments the setup.py at `path` passes to `setuptools.setup`, run as written.

    `globals_`, if given, receives setup.py's module globals (its requirement lists).
    """
    captured = {}
    patch = pytest.MonkeyPatch()
    patch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    try:
        namespace = runpy.run_path(str(path), run_name="__main__")
    finally:
        patch.undo()
    if globals_ is not None:
        globals_.update(namespace)
    return captured


@pytest.fixture(scope="module")
def metadata():
    return run_setup_py(ROOT / "setup.py")


def test_version_is_written_once_and_setup_py_reads_it(metadata):
    from keras_at import _version

    assert metadata["version"] == keras_at.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", keras_at.__version__)
    init = (ROOT / "keras_at" / "__init__.py").read_text(encoding="utf-8")
    assert keras_at.__version__ not in init, "keras_at/__init__.py writes the version itself"
    setup_py = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert keras_at.__version__ not in setup_py, "setup.py writes the version itself"


def test_setup_py_parses_the_version_file(tmp_path):
    # A copy of setup.py beside a _version.py of another version reads that version.
    (tmp_path / "keras_at").mkdir()
    (tmp_path / "keras_at" / "_version.py").write_text('__version__ = "9.8.7"\n')
    (tmp_path / "README.md").write_text("readme")
    (tmp_path / "setup.py").write_text((ROOT / "setup.py").read_text(encoding="utf-8"))
    assert run_setup_py(tmp_path / "setup.py")["version"] == "9.8.7"


def test_license_file_and_metadata_agree(metadata):
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert metadata["license_expression"] == "Apache-2.0"
    assert metadata["license_files"] == ["LICENSE"]
    # PEP 639: the expression replaces License classifiers; both would be two claims.
    assert not [c for c in metadata["classifiers"] if c.startswith("License ::")]
    assert "license" not in metadata


def test_python_versions_claimed_are_the_tested_ones(metadata):
    minimum = re.fullmatch(r">=3\.(\d+)", metadata["python_requires"])
    assert minimum, metadata["python_requires"]
    listed = sorted(
        int(c.rsplit(".", 1)[1])
        for c in metadata["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert listed and listed[0] == int(minimum.group(1)), (listed, metadata["python_requires"])
    running = f"Programming Language :: Python :: 3.{sys.version_info.minor}"
    assert running in metadata["classifiers"], (
        f"the tests run on Python 3.{sys.version_info.minor}: list it in setup.py's classifiers"
    )


def test_changelog_has_unreleased_and_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased", headings
    assert keras_at.__version__ in headings, (keras_at.__version__, headings)
    dated = re.findall(r"^## \[([^\]]+)\] - (\d{4}-\d{2}-\d{2})$", text, re.MULTILINE)
    assert [v for v, _ in dated] == headings[1:], "every released version needs a date"


def test_ci_runs_the_smoke_test_and_the_jax_tests_before_the_tests_which_close_the_output():
    # The smoke test prints no counts; CI is judged on the last test runner's summary line,
    # which must be `make test`'s (the whole suite), not test-jax's.
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert {"make smoke", "make test-jax", "make docs", "make test"} <= set(commands), commands
    assert commands[-1] == "make test", commands
    assert commands.index("make smoke") < commands.index("make test-jax"), commands


def test_the_jax_environment_installs_every_dependency_but_tensorflow():
    # make test-jax's venv and the README's command for JAX users install setup.py's
    # REQUIRES_WITHOUT_TENSORFLOW; install_requires is that list plus TensorFlow's.
    namespace = {}
    metadata = run_setup_py(ROOT / "setup.py", namespace)
    without = namespace["REQUIRES_WITHOUT_TENSORFLOW"]
    tensorflow = namespace["TENSORFLOW_REQUIRES"]
    assert sorted(metadata["install_requires"]) == sorted(tensorflow + without)
    assert not [r for r in without if re.match(r"tensorflow|tensorboard|keras-cv", r)], without
    assert "jax[cpu]" in metadata["extras_require"]["test"]  # tests/test_backends.py runs
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    listed = re.search(r"^JAX_REQUIREMENTS := (.+)$", makefile, re.MULTILINE).group(1)
    assert sorted(listed.replace('"', "").split()) == sorted(
        without + ["jax[cpu]", "pytest", "pytest-timeout"])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^pip install (.+?)\s+# or JAX's GPU build$", readme, re.MULTILINE)
    assert command, "README's command for JAX without TensorFlow"
    assert sorted(command.group(1).replace('"', "").split()) == sorted(without + ["jax[cpu]"])
    assert "pip install --no-deps ." in readme


def test_make_test_fast_leaves_out_the_slow_tests_and_every_test_has_a_time_limit(metadata):
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pytest_config = config["tool"]["pytest"]["ini_options"]
    assert [m for m in pytest_config["markers"] if m.startswith("slow:")]
    assert pytest_config["timeout"] >= 300  # pytest-timeout's, with room for a loaded machine
    assert pytest_config["timeout_method"] == "thread"  # also stops a hang in TensorFlow's C++
    assert "pytest-timeout" in metadata["extras_require"]["test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")

    def recipe(target):
        return re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)

    # the whole suite, its longest tests listed
    assert recipe("test").splitlines()[-1] == "\t$(PY) -m pytest -q --durations=15"
    assert recipe("test-fast").splitlines()[-1] == '\t$(PY) -m pytest -q -m "not slow"'
    development = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    assert "`make test`" in development and "`make test-fast`" in development
    assert "@pytest.mark.slow" in development and "slow_fixture" in development


def test_make_docs_installs_the_docs_extra_and_builds_strictly(metadata):
    docs = metadata["extras_require"]["docs"]
    assert {re.split(r"[<>=\[]", r)[0] for r in docs} == {"mkdocs", "mkdocs-material",
                                                         "mkdocstrings"}, docs
    assert any(r.startswith("mkdocstrings[python]") for r in docs), docs
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    install = re.search(r"^\$\(VENV\)/\.docs-installed:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert install and '-e ".[docs]"' in install.group(1) and "--no-index" in install.group(1)
    build = re.search(r"^docs: \$\(VENV\)/\.docs-installed\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert build and build.group(1).rstrip().endswith("-m mkdocs build --strict"), build
    assert "site/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
