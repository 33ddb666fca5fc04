"""Shared fixtures: the third-party fixture packages, installed with pip into a private folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the example, broken and misbehaving fixture plugins, installed by pip.

    Installing into a private ``--target`` folder (instead of the test venv) keeps
    every other test's plugin set unchanged; putting the folder on ``sys.path``
    or ``PYTHONPATH`` is all it takes for entry-point discovery to see them.
    """
    site = tmp_path_factory.mktemp("plugin-site")
    sources = tmp_path_factory.mktemp("plugin-src")
    packages = []
    for name in (
        "xleval-example-plugin",
        "xleval-broken-plugin",
        "xleval-misbehaving-plugin",
    ):
        # Build from a copy so setuptools' build/ and egg-info never land in the repo.
        shutil.copytree(FIXTURES / name, sources / name)
        packages.append(str(sources / name))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            *packages,
        ],
        check=True,
    )
    return site


@pytest.fixture
def with_plugin_site(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the fixture plugins discoverable in this process for one test."""
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


@pytest.fixture
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not inherit the caller's plugin settings."""
    for var in ("XLEVAL_STRICT_PLUGINS", "XLEVAL_DISABLE_PLUGINS", "XLEVAL_DEBUG"):
        monkeypatch.delenv(var, raising=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow end-to-end tests run in CI (CI=true) or with --run-slow; skipped locally otherwise."""
    if config.getoption("--run-slow") or os.environ.get("CI", "").lower() in ("1", "true"):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI, or locally with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
