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
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of ``test_runner.write_spec``'s tiny spec (local executor, two seeds),
    made once per session. Tests that may write into a run copy it first (``copy_run``)."""
    from click.testing import CliRunner
    from test_runner import write_spec

    from xleval.cli.main import build_cli

    tmp = tmp_path_factory.mktemp("tiny-run")
    spec = write_spec(tmp)
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(tmp / "run"), "-q"])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def copy_run(run: Path, into: Path) -> Path:
    """A private copy of a finished run directory."""
    return Path(shutil.copytree(run, into / "run"))


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


# -- the meta-test: every hook is called by a test ---------------------------------------

#: kinds of which a test built a component that a hook function defined in tests/ registered
BUILT_BY_TESTS: set[str] = set()
TESTS = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    """Record which kinds' components, registered by test code, get built."""
    from xleval.plugin.registry import Component

    original = Component.build

    def build(self: Component, options: dict | None = None) -> object:
        built = original(self, options)
        module = sys.modules.get(self.hook_module or "")
        source = getattr(module, "__file__", None)
        if source and Path(source).resolve().is_relative_to(TESTS):
            BUILT_BY_TESTS.add(self.kind)
        return built

    Component.build = build  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On a run of the whole suite, fail if a hook kind was never exercised: no test built
    a component registered through that hook by a test plugin (datasette's meta-test,
    measured instead of grepped)."""
    from xleval.api.hookspecs import KIND_HOOKS

    config = session.config
    files = {Path(str(item.fspath)).name for item in session.items}
    whole = files >= {p.name for p in TESTS.glob("test_*.py")} and not (
        config.option.keyword or config.option.markexpr or config.option.collectonly
    )
    if not whole or exitstatus != 0:
        return
    untested = [hook for kind, hook in KIND_HOOKS.items() if kind not in BUILT_BY_TESTS]
    if untested:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "meta-test failed: no test builds a component registered through "
                + ", ".join(untested),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
