"""The report's schema check: the compiled fast path and jsonschema give the same verdict on
reports damaged in every field (the fast path decides alone only when it accepts)."""

from __future__ import annotations

import copy
import json
import random

import pytest

from xleval.experiment.resources import load_schema
from xleval.plugin.registry import schema_errors
from xleval.report.build import ReportError, _report_validator, validate_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")

WRONG = [None, "x", -1, 2.5, 1e9, True, [], {}, [1], {"extra": 1}]


@pytest.fixture(scope="module")
def report(tiny_run):
    return json.loads((tiny_run / "report.json").read_text(encoding="utf-8"))


def places(value, path=()):
    """Every path into a JSON value, containers included."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from places(item, (*path, index))


def set_at(report, path, value):
    damaged = copy.deepcopy(report)
    node = damaged
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return damaged


def drop_at(report, path):
    damaged = copy.deepcopy(report)
    node = damaged
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return damaged


def fast_accepts(report):
    import fastjsonschema

    try:
        _report_validator()(report)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def jsonschema_accepts(report):
    return not schema_errors(load_schema("report"), report, root="(report)")


def test_the_fast_check_never_accepts_what_jsonschema_rejects(report):
    rng = random.Random(0)
    # free-form parts (a cell's info and provenance) accept anything: damage elsewhere
    paths = [p for p in places(report) if p and not {"info", "provenance"} & set(p)]
    damaged = [set_at(report, p, rng.choice(WRONG)) for p in rng.sample(paths, 200)]
    damaged += [drop_at(report, p) for p in rng.sample(paths, 100)]
    damaged += [
        set_at(report, (*p, "unexpected"), 1) for p in paths if isinstance(_at(report, p), dict)
    ][:100]
    rejected = 0
    for candidate in damaged:
        if fast_accepts(candidate):  # only then does the fast check decide alone
            assert jsonschema_accepts(candidate), "accepted a report jsonschema rejects"
        else:
            rejected += 1
    assert rejected > 150  # the damage was real
    assert fast_accepts(report) and jsonschema_accepts(report)


def _at(value, path):
    for part in path:
        value = value[part]
    return value


def test_a_rejected_report_lists_every_error_with_its_path(report):
    damaged = set_at(report, ("comparisons", 0, "p_value"), 2.0)
    damaged = set_at(damaged, ("cells", 0, "status"), "weird")
    with pytest.raises(ReportError) as caught:
        validate_report(damaged)
    text = str(caught.value)
    assert "at 'comparisons[0].p_value'" in text and "at 'cells[0].status'" in text


def test_a_non_finite_number_is_rejected_though_the_schema_allows_the_field(report):
    damaged = set_at(report, ("cells", 0, "train_seconds"), float("nan"))
    with pytest.raises(ReportError, match="not a finite number"):
        validate_report(damaged)


def test_compiling_the_fast_check_leaves_the_shared_schema_as_it_was():
    before = json.dumps(load_schema("report"), sort_keys=True)
    _report_validator.cache_clear()
    _report_validator()
    assert json.dumps(load_schema("report"), sort_keys=True) == before
