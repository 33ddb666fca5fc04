"""The html reporter: a self-contained page whose images decode, every section present, and
nothing from data, spec or plugins executable; checked in real headless Chromium too."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import copy_run

from xleval.plugin.manager import get_plugin_manager
from xleval.report.build import read_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")

SECTIONS = [
    "summary", "curves", "gaps", "variance", "comparisons", "calibration", "failures", "provenance"
]  # fmt: skip
EVIL = '<script>alert("x")</script>"'


class PageParser(HTMLParser):
    """Collects what a browser would act on: elements, ids, images, scripts, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.images: list[dict[str, str]] = []
        self.handlers: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "img":
            self.images.append(attributes)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self.handlers += [v for _, v in attrs if v and v.strip().lower().startswith("javascript:")]

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    return copy_run(tiny_run, tmp_path_factory.mktemp("html"))


def poisoned(report: dict) -> dict:
    """The report with hostile strings wherever data, specs or plugins put text."""
    report = json.loads(json.dumps(report))
    rename = {m["label"]: f"{m['label']} {EVIL}" for m in report["spec"]["methods"]}
    for method in report["spec"]["methods"]:
        method["label"] = rename[method["label"]]
    for entry in report["aggregates"] + report["cells"] + report["comparisons"]:
        for key in ("method", "baseline"):
            if entry.get(key) in rename:
                entry[key] = rename[entry[key]]
    report["summary"] = {rename.get(k, k): v for k, v in report["summary"].items()}
    report["spec"]["name"] = f"exp {EVIL}"
    report["spec"]["description"] = EVIL
    report["dataset"]["name"] = f"data {EVIL}"
    report["environment"]["plugins"][0]["name"] = f"plugin {EVIL}"
    report["cells"][0]["status"] = "failed"
    report["cells"][0]["error"] = f"RuntimeError: {EVIL}"
    return report


def render(report: dict, tmp_path: Path) -> tuple[str, Path]:
    reporter = get_plugin_manager(strict=False).registry.build("reporters", "html")
    path = tmp_path / "report.html"
    reporter.write(report, str(path))
    return path.read_text(encoding="utf-8"), path


def test_run_writes_html_and_plots_next_to_the_report(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    parser = PageParser()
    parser.feed(page)
    assert set(SECTIONS) <= parser.ids
    for name in ("learning_curves", "transfer_gap", "variance", "calibration"):
        for suffix in ("png", "svg"):
            assert (run_dir / "plots" / f"{name}.{suffix}").stat().st_size > 1000


def test_every_image_decodes_and_every_section_is_there(run_dir, tmp_path):
    from PIL import Image

    page, _ = render(read_report(run_dir), tmp_path)
    parser = PageParser()
    parser.feed(page)
    assert set(SECTIONS) <= parser.ids
    assert len(parser.images) == 4  # learning curves, transfer gap, variance, calibration
    for image in parser.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix), "images must be embedded, not linked"
        decoded = Image.open(io.BytesIO(base64.b64decode(image["src"][len(prefix) :])))
        decoded.load()
        assert decoded.size[0] > 100 and decoded.size[1] > 100
        assert image["alt"]
    assert "http://" not in page and "https://" not in page.replace(
        "https://xleval.dev/schemas", ""
    )


def test_hostile_strings_are_escaped_everywhere(run_dir, tmp_path):
    page, _ = render(poisoned(read_report(run_dir)), tmp_path)
    parser = PageParser()
    parser.feed(page)
    assert "script" not in parser.tags
    assert not parser.handlers
    assert "<script>" not in page
    text = "".join(parser.text)
    assert EVIL in text  # shown to the reader, as text
    assert f"RuntimeError: {EVIL}" in text  # the failure is listed
    assert "&lt;script&gt;" in page and "&#34;" in page


def find_browser() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(
    find_browser() is None, reason="Debian's chromium and chromium-driver are not installed"
)
def test_page_in_headless_chromium_loads_every_image_without_console_errors(run_dir, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = find_browser()
    _, page_path = render(poisoned(read_report(run_dir)), tmp_path)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1024",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(page_path.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => "
            "[i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])"
        )
        alerts_or_scripts = driver.execute_script("return document.scripts.length")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(height, 8000))
        screenshot = tmp_path / "report.png"
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    assert images and all(done and w > 0 and h > 0 and shown > 0 for done, w, h, shown in images)
    assert alerts_or_scripts == 0
    assert errors == []
    assert screenshot.stat().st_size > 10_000


def test_chromium_is_installed_in_ci():
    """CI installs Debian's chromium when missing; the browser test must not be skipped there."""
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "chromium-driver" in ci and "apt-get install" in ci
    if subprocess.run(["sh", "-c", 'test "$CI" = true']).returncode == 0:
        assert find_browser() is not None


def test_calibration_bins_agree_with_the_ece_metric(run_dir):
    import torch

    from xleval.api.predictions import decode_predictions, read_predictions
    from xleval.train.tensors import metric_inputs

    report = read_report(run_dir)
    stored = read_predictions(run_dir / "predictions.jsonl")
    ece = get_plugin_manager(strict=False).registry.build("metrics", "ece", {"bins": 10})
    for curve in report["calibration"]:
        cells = [c for c in report["cells"] if c["method"] == curve["method"]]
        decoded = [
            metric_inputs(*decode_predictions(stored[(c["key"], c["target"])])) for c in cells
        ]
        y_true = torch.cat([y for y, _ in decoded])
        probs = torch.cat([p for _, p in decoded])
        assert curve["n"] == len(y_true) == sum(b["count"] for b in curve["bins"])
        assert curve["ece"] == pytest.approx(ece.compute(y_true, probs), abs=1e-6)


def test_written_pages_are_readable_by_others(run_dir):
    """mkstemp creates 0600 files; reports are for sharing, so they follow the umask."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    for name in ("report.html", "report.json"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_figures_are_reused_while_what_they_show_is_unchanged(run_dir, tmp_path, monkeypatch):
    """A page written again from an unchanged report takes its figures from plots/ without
    drawing (matplotlib not called), byte for byte the same page; a change to the numbers
    or to a saved file draws them again."""
    import xleval_plugins.html_report as html_report

    report = read_report(run_dir)
    first, _ = render(report, tmp_path)
    files = {p.name: p.read_bytes() for p in (tmp_path / "plots").iterdir()}

    def no_drawing():
        raise AssertionError("figures drawn again")

    monkeypatch.setattr(html_report, "_pyplot", no_drawing)
    second, _ = render(report, tmp_path)
    assert second == first
    assert {p.name: p.read_bytes() for p in (tmp_path / "plots").iterdir()} == files

    monkeypatch.undo()
    drawn = []
    real = html_report._pyplot
    monkeypatch.setattr(html_report, "_pyplot", lambda: drawn.append(1) or real())
    changed = json.loads(json.dumps(report))
    changed["aggregates"][0]["mean"] = 0.123456
    render(changed, tmp_path)
    assert drawn == [1]
    (tmp_path / "plots" / "calibration.png").write_bytes(b"edited by hand")
    render(changed, tmp_path)
    assert drawn == [1, 1]
    assert (tmp_path / "plots" / "calibration.png").read_bytes().startswith(b"\x89PNG")
