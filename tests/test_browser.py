"""What a person sees in a browser: the sweep's HTML report and the MLflow UI on its runs,
in headless Chromium (Debian's `chromium` and `chromium-driver`; `.ci/run` installs them).

Chromium is driven through chromedriver's W3C WebDriver HTTP API with the few commands below,
so the MLflow UI (a JavaScript app) is checked after it has fetched and drawn the runs.
"""
from __future__ import annotations

import json
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import test_dashboards
from dashboards_store import (
    BENCHMARK_MODELS,
    EXPERIMENT,
    SWEEP,
    TRIALS,
    log_fake_benchmark,
)
from mlflow import MlflowClient
from mlflow_helpers import store_uri
from test_dashboards import served
from test_security import running_ui

from orchestrator.tracking import Tracker

# the fake sweep's store and its report, the fixtures of test_dashboards (module-scoped: made
# once more for this module)
checkpoint = test_dashboards.checkpoint
store = test_dashboards.store
report = test_dashboards.report

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the WebDriver spec's key for an element
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1000", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]


class Browser:
    """One headless Chromium session behind chromedriver."""

    def __init__(self, driver: subprocess.Popen, base: str):
        self.driver, self.base = driver, base
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium"), "args": CHROMIUM_FLAGS}}
        session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = f"/session/{session['sessionId']}"

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return json.loads(reply.read())["value"]
        except urllib.error.HTTPError as error:  # WebDriver's errors say what went wrong
            raise AssertionError(f"WebDriver {method} {path}: {error.read()[:500]!r}") from None

    def open(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    @property
    def url(self) -> str:
        return self._call("GET", f"{self.session}/url")

    def run(self, script: str, *args):
        """The value of the JavaScript function body `script` (`arguments[i]` are `args`)."""
        return self._call("POST", f"{self.session}/execute/sync",
                          {"script": script, "args": list(args)})

    def wait_for(self, script: str, *args, seconds: float = 30):
        """The first truthy value of `script`, polled until `seconds` pass (then None)."""
        deadline = time.monotonic() + seconds
        while True:
            value = self.run(script, *args)
            if value or time.monotonic() > deadline:
                return value or None
            time.sleep(0.2)

    def click(self, element: dict) -> None:
        """A real click (WebDriver checks the element is visible and not covered)."""
        self._call("POST", f"{self.session}/element/{element[ELEMENT]}/click", {})

    def text(self) -> str:
        return self.run("return document.body ? document.body.innerText : ''")

    def quit(self) -> None:
        try:
            self._call("DELETE", self.session)
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: apt-get install chromium "
                    f"chromium-driver (as .ci/run does)", pytrace=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/status", timeout=2):
                break
        except OSError:
            assert driver.poll() is None and time.monotonic() < deadline, "no chromedriver"
            time.sleep(0.1)
    session = Browser(driver, base)
    yield session
    session.quit()


# ---- the report --------------------------------------------------------------------------
REPORT_AS_SEEN = """
const images = [...document.images];
if (document.readyState !== "complete" || images.some(image => !image.complete)) return null;
const shown = element => element.getBoundingClientRect().width > 0;
const table = document.getElementById("trials");
return {
  rows: table && shown(table)
    ? [...table.querySelectorAll("tr[data-trial]")].filter(shown).map(r => r.dataset.trial) : [],
  pictures: images.length,
  shown: images.filter(image => image.naturalWidth > 0 && shown(image)).length,
  broken: images.filter(image => image.naturalWidth === 0).map(image => image.src),
  marker: document.body.getAttribute("data-images-loaded"),
};
"""


def test_the_report_shows_its_trials_and_pictures(report, browser):
    with served(report.parent) as base:
        browser.open(f"{base}/{report.name}/index.html")
        seen = browser.wait_for(REPORT_AS_SEEN)
        page = browser.text()[:1500]
    assert seen, f"the report never finished loading; it showed: {page}"
    assert seen["rows"] == [t.trial_id for t in TRIALS], page
    assert seen["broken"] == [], f"pictures that did not load: {seen['broken']}"
    assert seen["pictures"] == seen["shown"] == 7, seen  # 3 views, by-arch, 3 trials' curves
    assert seen["marker"] == "all"  # the report's own check agrees


BENCHMARK_AS_SEEN = """
const images = [...document.images];
if (document.readyState !== "complete" || images.some(image => !image.complete)) return null;
const table = document.getElementById("benchmark");
return {
  rows: [...table.querySelectorAll("tr[data-model]")].map(row => row.dataset.model),
  bold: [...table.querySelectorAll("td")].filter(cell =>
    Number(getComputedStyle(cell).fontWeight) >= 700).map(cell => cell.textContent),
  shown: images.filter(image => image.naturalWidth > 0).length,
  marker: document.body.getAttribute("data-images-loaded"),
};
"""


def test_the_benchmark_page_shows_its_table_and_picture(browser, tmp_path):
    from dashboards.benchmark_report import benchmark_report

    uri = store_uri(tmp_path / "mlflow.db")
    log_fake_benchmark(uri)
    benchmark_report(uri, None, None, None, tmp_path / "page")
    with served(tmp_path) as base:
        browser.open(f"{base}/page/index.html")
        seen = browser.wait_for(BENCHMARK_AS_SEEN)
        page = browser.text()[:1500]
    assert seen, f"the benchmark page never finished loading; it showed: {page}"
    assert seen["rows"] == list(BENCHMARK_MODELS)
    # CosPlace is best in every column; NetVLAD ties with it at Pitts30k's R@10
    assert seen["bold"] == ["90.0", "95.0", "96.0", "80.0", "88.0", "90.0", "96.0"]
    assert seen["shown"] == 1 and seen["marker"] == "all"


# ---- the MLflow UI -----------------------------------------------------------------------
# [name, run id] of each run shown in the runs table, once at least arguments[0] are shown
RUN_LINKS = """
const links = [...document.querySelectorAll('.ag-row a[href*="/runs/"]')]
  .filter(link => link.getBoundingClientRect().width > 0)
  .map(link => [link.textContent.trim(), link.getAttribute("href").split("/runs/")[1]]);
return links.length >= arguments[0] ? links : null;
"""
EXPANDER = """
const link = [...document.querySelectorAll(".ag-row a")]
  .find(a => a.textContent.trim() === arguments[0]);
return link ? link.closest(".ag-cell").querySelector("button") : null;
"""


def printed_link(lines: queue.Queue, experiment: str, seconds: float) -> str | None:
    """The address `orchestrator ui` printed for the runs of `experiment`, if any."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        found = re.search(rf"runs of {re.escape(experiment)}: (\S+)", line)
        if found:
            return found.group(1)
    return None


@pytest.fixture(scope="module")
def ui(store, tmp_path_factory):
    """`orchestrator ui` on the fake sweep's store, started once for the module's UI tests
    (starting it costs seconds): yields (its port, a queue of the lines it prints)."""
    Tracker(store["uri"], EXPERIMENT)  # the project's next write tags the store's experiment
    cwd = tmp_path_factory.mktemp("ui")
    with running_ui(store["uri"], cwd, stdout=subprocess.PIPE) as (process, port):
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in process.stdout],
                         daemon=True).start()
        yield port, lines


def test_the_mlflow_ui_opens_on_the_sweeps_runs(store, ui, browser):
    """A person runs `orchestrator ui` and opens the address it prints for the experiment:
    the runs table with the sweep comes first, and opening the sweep lists its trials by name.
    (MLflow 3.17's UI opens its GenAI pages, 'No data available', on any address that does
    not ask for the runs view, whatever the experiment's `mlflow.experimentKind` tag says.)"""
    port, lines = ui
    link = printed_link(lines, EXPERIMENT, seconds=20)
    assert link, f"orchestrator ui printed no address for the runs of {EXPERIMENT}"
    assert link.startswith(f"http://127.0.0.1:{port}/")
    browser.open(link)
    first = browser.wait_for(RUN_LINKS, 2)  # the sweep and the evaluation
    where, page = browser.url, browser.text()[:1500]
    assert first and [SWEEP, store["parent"]] in first, f"at {where} the page showed: {page}"
    assert ["eval-vgg16-synth-val", store["evaluation"]] in first
    expander = browser.run(EXPANDER, SWEEP)  # the [+] beside the sweep's name
    assert expander, f"no button beside {SWEEP} to show its trials"
    browser.click(expander)
    listed = browser.wait_for(RUN_LINKS, 2 + len(TRIALS))
    trials = {run_id: name for name, run_id in listed or [] if run_id in store["trials"].values()}
    assert len(trials) == len(TRIALS), f"trials listed under the sweep: {listed}"
    for trial_id, run_id in store["trials"].items():
        assert trials[run_id].startswith(f"{trial_id} "), trials


def test_experiments_are_tagged_as_model_training(tmp_path):
    """New experiments carry `mlflow.experimentKind`; one made before (the tag missing) gets
    it when the project next writes to it; a kind set by hand is kept."""
    uri = store_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    old = client.create_experiment("old")
    client.create_experiment("chosen", tags={"mlflow.experimentKind": "forecasting"})
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    for name in ("new", "old", "chosen"):
        Tracker(uri, name)
    kinds = {e.name: e.tags.get("mlflow.experimentKind") for e in client.search_experiments()}
    assert kinds == {"new": "custom_model_development", "old": "custom_model_development",
                     "chosen": "forecasting", "Default": None}


# the text of the Dataset column's cell in the row of the run named arguments[0], once drawn
# (and, when arguments[1] is given, once it holds that text)
DATASET_CELL = """
const header = [...document.querySelectorAll(".ag-header-cell")]
  .find(cell => cell.textContent.trim() === "Dataset");
const link = [...document.querySelectorAll(".ag-row a")]
  .find(a => a.textContent.trim() === arguments[0]);
if (!header || !link) return null;
const row = link.closest(".ag-row").getAttribute("row-index");
const cell = document.querySelector(
  `.ag-row[row-index="${row}"] [col-id="${header.getAttribute("col-id")}"]`);
const text = cell ? cell.innerText.trim() || "(empty)" : null;
return text && (!arguments[1] || text.includes(arguments[1])) ? text : null;
"""


def test_the_runs_table_shows_a_runs_dataset(store, ui, synth_root, browser):
    """The Dataset column of the runs table names what a run was measured on, where it showed
    '-' before runs logged their datasets; a run that logged none still shows '-'."""
    from vpr_core.data import open_split
    from vpr_core.data.description import of_split
    from vpr_tracking.names import Context

    val = of_split(open_split(synth_root, "val"))
    Tracker(store["uri"], EXPERIMENT).store.log_datasets(store["evaluation"],
                                                         [(val, Context.EVALUATION)])
    port, _ = ui
    browser.open(f"http://127.0.0.1:{port}/#/experiments/{store['experiment_id']}/runs")
    shown = browser.wait_for(DATASET_CELL, "eval-vgg16-synth-val", val.name)
    seen = shown or browser.run(DATASET_CELL, "eval-vgg16-synth-val")
    sweep, page = browser.run(DATASET_CELL, SWEEP), browser.text()[:1500]
    assert shown, f"the evaluation's Dataset cell showed {seen!r}; the page: {page}"
    assert sweep == "-", f"the sweep's Dataset cell showed {sweep!r}"


REGISTERED_MODEL_AS_SEEN = """
const text = document.body ? document.body.innerText : "";
return text.includes("Version 1") && text.includes("champion") ? text : null;
"""


def test_the_mlflow_ui_shows_the_registered_model_its_version_and_alias(store, checkpoint,
                                                                       browser, ui):
    """The best trial of the fake sweep registered as a sweep registers it (its checkpoint:
    the fake one): the registered model's page, on the UI already running, lists version 1
    with the `champion` alias."""
    from vpr_tracking.registry import register_run
    from vpr_tracking.store import store_at

    best = store["trials"][TRIALS[0].trial_id]
    registration = register_run(store_at(store["uri"]), "places", best, checkpoint=checkpoint,
                                sweep_run_id=store["parent"])
    assert (registration.version, registration.moved) == ("1", True)
    port, _ = ui
    browser.open(f"http://127.0.0.1:{port}/#/models/places")
    seen = browser.wait_for(REGISTERED_MODEL_AS_SEEN, seconds=60)
    page = browser.text()[:1500]
    assert seen, f"the registered model's page never showed version 1 and champion: {page}"
    assert "places" in seen
