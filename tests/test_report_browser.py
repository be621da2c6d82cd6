"""The HTML report in a real browser: headless Chromium opens the report of the ci run.

The report of the one local run of ``config/ci.yaml`` (tests/conftest.py, ``ci_run``) is written
with ``snakemake --report`` (and workflow/report/report.css, as ``make run`` does) and opened in
headless Chromium (Debian's ``chromium``), driven over its DevTools protocol
(``--remote-debugging-port``, the ``websocket-client`` package). Snakemake's report is a single-page
app that shows one category, then one subcategory, then one figure at a time, so the test clicks
through it as a reader would: every category in the menu, every subcategory, every row of the
results table, the view button of every figure. It checks

- nothing is written to the console as an error and no script throws while the page loads and
  while it is navigated;
- every ``report()`` item of the workflow's rules (workflow/rules/*.smk; the expected list is read
  from the rules and the files the run made, not written here) is listed under its category, in a
  row whose cells are its labels (peptide, role, figure);
- every image loads (``naturalWidth > 0``); tables and text files are offered for download;

and saves a screenshot (``report.png`` in the test's temporary folder). With a report of the demo
in ``results/report.html`` (``make run``), the same checks run on it and its screenshot is saved to
``results/report_screenshot.png``.

Skipped, with the reason, where Chromium (``chromium``/``chromium-browser``/``google-chrome``) or
websocket-client is not installed (Debian: ``apt-get install chromium``; .ci/run does).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for name in BROWSERS if (path := shutil.which(name))), None)

try:
    import websocket  # websocket-client
except ImportError:  # pragma: no cover - the lock installs it
    websocket = None

pytestmark = [
    pytest.mark.skipif(
        BROWSER is None,
        reason=f"no Chromium found ({', '.join(BROWSERS)}; Debian: apt-get install chromium)",
    ),
    pytest.mark.skipif(
        websocket is None, reason="websocket-client not installed (requirements.lock)"
    ),
]


class DevTools:
    """A minimal Chrome DevTools protocol client for one page: commands and the events seen."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method:
                    return event
            seen = len(self.events)
            assert time.monotonic() < deadline, f"no {method} within {timeout} s"
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str, timeout: float = 120):
        """Value of a JavaScript expression (awaited if it is a promise), as JSON."""
        self.ws.settimeout(timeout)
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(json.dumps(result["exceptionDetails"])[:2000])
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors among the events so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                args = params["args"]
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in args))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description", details["text"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a DevTools port; yields a factory of page clients."""
    profile = tmp_path_factory.mktemp("chromium_profile")
    process = subprocess.Popen(
        [
            BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1600,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, process.stderr.read().decode()[-4000:]
            assert time.monotonic() < deadline, "Chromium wrote no DevToolsActivePort in 60 s"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as reply:
            [page] = [t for t in json.load(reply) if t["type"] == "page"]
        yield DevTools(page["webSocketDebuggerUrl"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Clicks through the report as a reader would: the menu, a category, a subcategory, a row's view
# button. `visitAll()` reports what every view showed; `show(path)` leaves one figure on screen.
REPORT_DRIVER = r"""
window.reportDriver = (() => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (f, ms = 10000) => {
    const t0 = performance.now();
    while (performance.now() - t0 < ms) { const v = f(); if (v) return v; await sleep(20); }
    return null;
  };
  const link = text => [...document.querySelectorAll("li > a")].find(
    a => a.textContent.trim() === text);
  const problems = [];
  // Open a category (and subcategory) from the menu; the results table, or null.
  const open = async (category, subcategory) => {
    app.setView({navbarMode: "menu"});
    const item = await until(() => link(category));
    if (!item) { problems.push(`category ${category} not in the menu`); return null; }
    item.click();
    if (Object.keys(categories[category]).length > 1) {
      const sub = await until(() => link(subcategory));
      if (!sub) { problems.push(`${category} / ${subcategory} not listed`); return null; }
      sub.click();
    }
    const table = await until(() => document.querySelector("table thead th") &&
                                     document.querySelector("table"));
    if (!table) problems.push(`${category} / ${subcategory}: no results table`);
    return table;
  };
  // The results a row stands for: those whose labels are its cells (without labels: its path).
  const rowItems = (row, header, paths) => {
    const values = [...row.querySelectorAll("td")].slice(0, header.length)
                     .map(td => td.textContent.trim());
    const items = paths.filter(p => results[p].labels
      ? header.every((name, j) => String(results[p].labels[name.toLowerCase()] ?? "") === values[j])
      : values[0] === p);
    return {values, items};
  };
  const headerOf = table => [...table.querySelectorAll("thead th")]
                              .map(th => th.textContent.trim()).filter(t => t);
  // Click a row's view button; for an image wait until it is shown and loaded.
  const view = async (row, path) => {
    const entry = results[path];
    const cells = [...row.querySelectorAll("td")];
    const button = cells[cells.length - 1].querySelector("a");
    if (entry.mime_type === "text/html") {  // shown in a frame of the content panel
      button.click();
      const frame = await until(() => [...document.querySelectorAll("iframe")].find(
        f => f.getAttribute("src") === entry.data_uri));
      return {kind: "page", shown: Boolean(frame)};
    }
    if (!entry.mime_type.startsWith("image/")) {
      return {kind: "download", download: button.getAttribute("href") === entry.data_uri &&
                                          button.getAttribute("download") === entry.name};
    }
    button.click();
    const img = await until(() => [...document.querySelectorAll("img")].find(
      im => im.getAttribute("src") === entry.data_uri && im.complete));
    return {kind: "image", naturalWidth: img ? img.naturalWidth : 0};
  };
  const visitAll = async () => {
    await until(() => link("Workflow"));
    const menu = [...document.querySelectorAll("li > a")].map(a => a.textContent.trim());
    const views = [];
    for (const category of Object.keys(categories).sort()) {
      for (const subcategory of Object.keys(categories[category]).sort()) {
        const table = await open(category, subcategory);
        if (!table) continue;
        const header = headerOf(table);
        const paths = categories[category][subcategory];
        const nRows = table.querySelectorAll("tbody tr").length;
        for (let i = 0; i < nRows; i++) {
          const row = document.querySelector("table").querySelectorAll("tbody tr")[i];
          const {values, items} = rowItems(row, header, paths);
          const seen = {category, subcategory, header, values, paths: items};
          if (items.length === 1) Object.assign(seen, await view(row, items[0]));
          views.push(seen);
        }
      }
    }
    return {menu, views, problems};
  };
  const show = async path => {
    const [category, subcategory] = Object.entries(categories).flatMap(([c, subs]) =>
      Object.entries(subs).filter(([s, ps]) => ps.includes(path)).map(([s]) => [c, s]))[0];
    const table = await open(category, subcategory);
    const header = headerOf(table);
    const row = [...table.querySelectorAll("tbody tr")].find(
      r => rowItems(r, header, categories[category][subcategory]).items[0] === path);
    return view(row, path);
  };
  return {visitAll, show};
})();
"""


@dataclass
class ReportView:
    menu: list[str]
    views: list[dict]
    problems: list[str]
    results: dict[str, dict]  # the report's own data: path -> {labels, mime_type, ...}
    categories: dict[str, dict[str, list[str]]]
    errors: list[str] = field(default_factory=list)
    load_seconds: float = 0.0


def open_report(page: DevTools, report: Path, screenshot: Path) -> ReportView:
    """Load the report, click through every view, leave a figure on screen for the screenshot."""
    page.events.clear()
    for domain in ("Page", "Runtime", "Log"):
        page.send(f"{domain}.enable")
    start = time.perf_counter()
    page.send("Page.navigate", url=report.resolve().as_uri())
    page.wait_for("Page.loadEventFired")
    page.evaluate(
        "new Promise(r => { const t = setInterval(() => { const s = document.querySelector("
        "'#loading-screen'); if (!s || s.style.display === 'none') { clearInterval(t); r(1); } },"
        " 20); })"
    )
    load_seconds = time.perf_counter() - start
    data = json.loads(page.evaluate("JSON.stringify({results, categories})"))
    page.evaluate(REPORT_DRIVER)
    visited = page.evaluate("reportDriver.visitAll()", timeout=300)
    # On screen for the screenshot: the summary figure (else the first image), as a reader opens it.
    images = [p for p, r in data["results"].items() if r["mime_type"].startswith("image/")]
    first = next((p for p in images if p.endswith("summary.png")), images[0])
    page.evaluate(f"reportDriver.show({json.dumps(first)})")
    time.sleep(0.3)
    page.screenshot(screenshot)
    return ReportView(
        visited["menu"], visited["views"], visited["problems"], data["results"],
        data["categories"], page.errors(), load_seconds,
    )


def report_items(rules_dir: Path) -> list[tuple[str, str]]:
    """(output pattern, category) of every ``report()`` item in the rule files."""
    items = []
    for rules in sorted(rules_dir.glob("*.smk")):
        text = rules.read_text()
        for call in re.finditer(r"report\(\s*\"([^\"]+)\",(.*?)\n\s*\)", text, flags=re.S):
            category = re.search(r"category=\"([^\"]+)\"", call[2])
            items.append((call[1], category[1] if category else "Other"))
    return items


def expected_entries(workdir: Path) -> tuple[dict[str, str], list[str]]:
    """{file: category} of the report items the run made, and the patterns that matched none."""
    from snakemake.io import expand, glob_wildcards

    expected, unmatched = {}, []
    for pattern, category in report_items(workdir / "workflow/rules"):
        found = glob_wildcards(str(workdir / pattern))
        names = found._fields
        files = (
            [pattern] if not names
            else expand(pattern, zip, **{n: getattr(found, n) for n in names})
        )
        files = [f for f in files if (workdir / f).is_file()]
        if not files:
            unmatched.append(pattern)
        expected.update({f: category for f in files})
    return expected, unmatched


def check_report(view: ReportView, workdir: Path) -> None:
    assert not view.errors, f"console errors while loading or navigating: {view.errors}"
    assert not view.problems, view.problems
    expected, unmatched = expected_entries(workdir)
    assert not unmatched, f"report() items the run made no file for: {unmatched}"
    # Every report() item is in the report, under its category, and in the menu.
    listed = {
        path: category
        for category, subcategories in view.categories.items()
        for paths in subcategories.values() for path in paths
    }
    assert listed == expected
    assert set(expected.values()) <= set(view.menu)
    # Each item is one row of its table, the row's cells are its labels, and its view works.
    rows = [v for v in view.views if len(v["paths"]) == 1]
    unmatched_rows = [v for v in view.views if len(v["paths"]) != 1]
    assert not unmatched_rows, f"rows that match no item or several: {unmatched_rows}"
    assert sorted(p for v in rows for p in v["paths"]) == sorted(expected)
    for row in rows:
        assert [h.lower() for h in row["header"]][:3] in (
            ["peptide", "role", "figure"], ["figure", "peptide", "role"]
        ), row
        if row["kind"] == "image":
            assert row["naturalWidth"] > 0, f"image did not load: {row['paths'][0]}"
        elif row["kind"] == "page":
            assert row["shown"], row
            page = base64.b64decode(view.results[row["paths"][0]]["data_uri"].split(",", 1)[1]).decode()
            assert "<table" in page and "Rama JSD: JAMUN" in page, row
        else:
            assert row["download"], row
    for path, result in view.results.items():
        assert set(result["labels"]) == {"peptide", "role", "figure"}, path


@pytest.fixture(scope="module")
def ci_report(ci_run: Path, tmp_path_factory) -> Path:
    report = tmp_path_factory.mktemp("report") / "report.html"
    proc = subprocess.run(
        [SNAKEMAKE, "--cores", "1", "--configfile", "config/ci.yaml", "--report", str(report),
         "--report-stylesheet", "workflow/report/report.css"],
        cwd=ci_run, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return report


def test_ci_report_in_chromium(browser, ci_report, ci_run, tmp_path):
    screenshot = tmp_path / "report.png"
    view = open_report(browser, ci_report, screenshot)
    print(f"report loaded in {view.load_seconds:.1f} s; {len(view.views)} rows visited; "
          f"screenshot {screenshot}")
    check_report(view, ci_run)
    assert screenshot.stat().st_size > 10_000


DEMO_REPORT = ROOT / "results/report.html"


@pytest.mark.skipif(
    not DEMO_REPORT.exists(), reason="no demo report (make run writes results/report.html)"
)
def test_demo_report_in_chromium(browser):
    screenshot = ROOT / "results/report_screenshot.png"
    view = open_report(browser, DEMO_REPORT, screenshot)
    print(f"demo report: {len(view.views)} rows; screenshot {screenshot}")
    assert not view.errors, view.errors
    assert not view.problems, view.problems
    images = [v for v in view.views if v.get("kind") == "image"]
    assert images and all(v["naturalWidth"] > 0 for v in images)
