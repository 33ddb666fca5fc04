"""The README's commands stay true: CI runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).parent.parent


def fenced_command(section: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1]
    match = re.search(r"```bash\n(.+?)\n```", body, re.S)
    assert match, f"no bash block under '## {section}'"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = fenced_command("Running the tests")
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci_lines
    assert "pytest" in command


def test_ci_treats_no_tests_as_failure():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'"\$status" -eq 5 \].*\n.*\n\s*exit 1', ci)


def test_quick_start_installs_torch_cpu_first():
    command = fenced_command("Quick start")
    assert command.index("torch==2.13.0") < command.index("pip install -e .")
    assert command.startswith("python3 -m venv .venv")


def test_contributing_example_is_the_installed_fixture():
    contributing = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    fixture = REPO / "tests" / "fixtures" / "xleval-example-plugin"
    blocks = re.findall(r"```(?:python|toml)\n(.+?)```", contributing, re.S)
    assert (fixture / "xleval_example_plugin.py").read_text(encoding="utf-8") in blocks
    assert (fixture / "pyproject.toml").read_text(encoding="utf-8") in blocks
