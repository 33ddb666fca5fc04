"""The command line: version, plugin listing, error handling."""

from __future__ import annotations

import json

import jsonschema
import pytest
from click.testing import CliRunner
from helpers import MetricPlugin, xleval_subprocess

from xleval import __version__
from xleval.cli.main import build_cli
from xleval.errors import OptionsError
from xleval.experiment.resources import load_schema
from xleval.plugin.manager import get_plugin_manager

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


def cli_with(*plugins):
    """A CLI whose plugin manager holds only ``plugins`` (and honours the CLI's options)."""

    def factory(**kwargs):
        return get_plugin_manager(use_entry_points=False, plugins=plugins, **kwargs)

    return build_cli(factory)


def test_version():
    result = CliRunner().invoke(build_cli(), ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"xleval, version {__version__}"


def test_plugins_table_lists_what_each_plugin_registers():
    result = CliRunner().invoke(
        cli_with(MetricPlugin(name="accuracy", plugin_name="mine")), ["plugins"]
    )
    assert result.exit_code == 0, result.output
    header, _, row = result.output.splitlines()[:3]
    assert header.split() == ["plugin", "distribution", "version", "registers", "status"]
    assert row.split() == ["mine", "-", "-", "metric:", "accuracy", "ok"]


def test_plugins_json_matches_its_schema_and_lists_bundled_plugins():
    result = CliRunner().invoke(build_cli(), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    jsonschema.validate(records, load_schema("plugins"))
    assert {"xleval.models", "xleval.metrics", "xleval.reporters"} <= {r["name"] for r in records}
    protocols = {r["name"]: r["components"].get("protocols") for r in records}
    assert protocols["xleval.protocols"] == [
        "fusion",
        "joint",
        "target-only",
        "transfer",
        "zero-shot",
    ]


def test_disable_plugin_option_reaches_the_manager():
    cli = cli_with(MetricPlugin(plugin_name="first"), MetricPlugin(plugin_name="second"))
    result = CliRunner().invoke(cli, ["--disable-plugin", "first", "plugins", "--json"])
    status = {r["name"]: r["status"] for r in json.loads(result.output)}
    assert status == {"first": "disabled", "second": "ok"}


def failing_cli():
    cli = cli_with()

    @cli.command("explode")
    def explode():
        raise OptionsError("invalid options for metric 'ece':\n  - at 'bins': 0 is less than 1")

    return cli


def test_user_error_is_a_message_and_exit_code_not_a_traceback():
    result = CliRunner().invoke(failing_cli(), ["explode"])
    assert result.exit_code == 1
    assert result.output.startswith("error: invalid options for metric 'ece'")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_debug_shows_the_traceback():
    result = CliRunner().invoke(failing_cli(), ["--debug", "explode"])
    assert isinstance(result.exception, OptionsError)


def test_unknown_command_is_a_usage_error():
    result = xleval_subprocess(["plugin"])
    assert result.returncode == 2
    assert "No such command 'plugin'" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_runs():
    result = xleval_subprocess(["plugins"])
    assert result.returncode == 0, result.stderr
    assert "xleval.models" in result.stdout


def test_main_exempts_its_objects_from_the_shutdown_collections():
    """After a command, ``main`` freezes the objects alive (gc.freeze): the interpreter's
    final collections would otherwise walk all of torch's (0.4 s of every exit)."""
    import gc

    from xleval.cli.main import main

    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["--version"])
        assert exit_info.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
