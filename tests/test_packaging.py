"""The wheel carries the core, the bundled plugins, the schemas and the entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(REPO),
        ],
        check=True,
        cwd=build,
    )
    (path,) = out.glob("xleval-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_core_plugins_and_schemas(wheel):
    names = set(wheel.namelist())
    assert "xleval/cli/main.py" in names
    assert "xleval/specs/plugins.schema.json" in names
    assert "xleval/specs/examples/quickstart.toml" in names
    assert "xleval/specs/examples/data/debian-descriptions.jsonl" in names
    assert "xleval_plugins/data/ddtp-sections.jsonl.gz" in names
    assert "xleval_plugins/templates/report.html.j2" in names
    for module in ("models", "transfer", "fusion", "metrics", "datasets", "executors", "reporters"):
        assert f"xleval_plugins/{module}.py" in names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    # the compiled row kernel (optional at install; a machine with a C compiler builds it)
    assert any(
        name.startswith("xleval/train/_rowkernels") and name.endswith(".so") for name in names
    )


def test_wheel_declares_bundled_plugins_as_entry_points(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[xleval]" in text
    assert "xleval.metrics = xleval_plugins.metrics" in text
    assert "xleval = xleval.cli.main:main" in text
