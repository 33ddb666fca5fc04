"""The public API: what a plugin imports, and nothing it drags in."""

from __future__ import annotations

import subprocess
import sys

import pytest

import xleval.api as api
from xleval.errors import OptionsError


def test_every_public_name_is_there():
    for name in api.__all__:
        assert hasattr(api, name), name
    assert api.hookimpl.project_name == "xleval"


def test_importing_the_api_loads_neither_torch_nor_the_rest_of_xleval():
    code = (
        "import sys, xleval.api; "
        "print(sorted(m for m in sys.modules if m == 'torch' or (m.startswith('xleval.') "
        "and not m.startswith('xleval.api'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_assign_splits_keeps_each_group_in_one_split_and_never_changes_it():
    examples = [
        api.Example(f"{lang}{g}", f"g{g}", lang, "a" if g % 2 else "b", f"text {g}")
        for g in range(300)
        for lang in ("en", "de")
    ]
    assigned = api.assign_splits(examples)
    by_group: dict[str, set[str]] = {}
    for e in assigned:
        by_group.setdefault(e.group, set()).add(e.split)
    assert all(len(splits) == 1 for splits in by_group.values())  # translations together
    shares = {s: sum(e.split == s for e in assigned) / len(assigned) for s in api.SPLITS}
    assert shares["train"] == pytest.approx(0.7, abs=0.08)
    assert shares["test"] == pytest.approx(0.2, abs=0.08)
    # the split depends on the group alone: adding, removing or reordering rows changes none
    again = {e.id: e.split for e in api.assign_splits(reversed(examples[:100]))}
    assert all(again[e.id] == e.split for e in assigned if e.id in again)
    dataset = api.MultilingualDataset("toy", assigned)
    assert dataset.languages == ("de", "en") and dataset.labels == ("a", "b")
    assert {e.split for e in api.assign_splits(examples, {"train": 1.0})} == {"train"}


def test_assign_splits_refuses_ratios_that_do_not_add_up():
    with pytest.raises(OptionsError, match="sum to 1"):
        api.assign_splits([], {"train": 0.5, "test": 0.2})


def test_a_protocol_without_run_cannot_be_built_and_the_error_names_its_plugin():
    from xleval.errors import PluginCodeError
    from xleval.plugin.manager import get_plugin_manager

    class NoRun(api.EvaluationProtocol):
        pass

    class Plugin:
        @api.hookimpl
        def xleval_register_protocols(self, register):
            register("no-run", NoRun, description="forgot run()")

    pm = get_plugin_manager(use_entry_points=False, plugins=[Plugin()])
    expected = r"protocol 'no-run' of plugin 'Plugin'.*abstract method run"
    with pytest.raises(PluginCodeError, match=expected):
        pm.registry.build("protocols", "no-run", {})


def test_keyed_files_return_their_value_only_under_their_key(tmp_path):
    from xleval.api.files import read_keyed, write_keyed

    path = tmp_path / "memo.json"
    assert read_keyed(path, "k") is None  # missing
    assert write_keyed(path, "k", {"a": [1, 2.5]})
    assert read_keyed(path, "k") == {"a": [1, 2.5]} and read_keyed(path, "other") is None
    assert not write_keyed(path, "k2", {"a": float("nan")})  # not JSON: nothing written
    assert read_keyed(path, "k") == {"a": [1, 2.5]}
    path.write_text("{truncated", encoding="utf-8")
    assert read_keyed(path, "k") is None
