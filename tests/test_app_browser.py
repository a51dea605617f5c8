"""The explorer in a real browser: `surrogate app` on a free port, Debian's chromium driven by
Playwright, every page opened twice (first load, then cached), no exception shown, screenshots kept.

Skips when /usr/bin/chromium or playwright is missing (`apt-get install chromium`; `playwright
install` cannot download browsers on a closed network). Screenshots go to $SURROGATE_TEST_ARTIFACTS
when set (CI: tests/artifacts), else to pytest's temporary folder.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_app_logic import build_app_results

CHROMIUM = Path("/usr/bin/chromium")
# without the background-networking flags chromium's outbound connections fail en masse offline
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# page title -> (address, what the end of its script draws, so we know it has rendered)
PAGES = {
    "Runs": ("", '[data-testid="stDataFrame"]'),
    "Run": ("run", '[data-testid="stTabs"]'),
    "Compare": ("compare", '[data-testid="stVegaLiteChart"]'),
    "New run": ("new_run", "text=Runs started from the app"),
    "Lorenz96": ("lorenz96", "text=Error at"),
    "PINN": ("pinn", "text=bad collocation"),  # the failed PINN run, explained
    "MMGP": ("mmgp", "text=No runs of this family yet"),
    "PROSE": ("prose", "text=No runs of this family yet"),
    "Dragonfly": ("dragonfly", "text=No runs of this family yet"),
}
# the family pages again, on a folder with a finished smoke run of every family
FAMILY_PAGES = {
    "Lorenz96": ("lorenz96", "text=Error at"),
    "PINN": ("pinn", "text=Relative L2 error"),
    "MMGP": ("mmgp", "text=Scalar outputs"),
    "PROSE": ("prose", "text=True equation"),
    "Dragonfly": ("dragonfly", '[data-testid="stDataFrame"]'),
}
TARGET_S = 3.0


@pytest.fixture(scope="session")
def app_results(tmp_path_factory, lorenz96_smoke_run) -> Path:
    """The folder of test_app_logic, built once per session whichever file asks first."""
    return build_app_results(tmp_path_factory.getbasetemp() / "app_results", lorenz96_smoke_run)

if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("streamlit")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(app_results):
    yield from serve(app_results)


@pytest.fixture(scope="module")
def family_app_url(smoke_results, lorenz96_smoke_run, helmholtz_smoke_run, mmgp_smoke_run, prose_smoke_run,
                   dragonfly_smoke_run):
    yield from serve(smoke_results)


def serve(results: Path):
    """`surrogate --results R app --port P` as a subprocess in its own process group; yields its address."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "surrogate", "--results", str(results), "app", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    first = proc.stdout.readline()
    url = f"http://127.0.0.1:{port}"
    try:
        assert f"http://localhost:{port}" in first, first
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not start: {proc.stdout.read() if proc.poll() is not None else ''}")
            time.sleep(0.3)
        yield url
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the launcher and the streamlit server it started (one process group, ours)."""
    os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.time() + 10
    while time.time() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("SURROGATE_TEST_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


SETTLED = """() => !document.querySelector('[data-testid="stSkeleton"]')
    && !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')"""


def settle(page, title: str, marker: str, timeout_ms: int = 30_000) -> None:
    """Wait for the page's title and its last element, then until nothing is a placeholder."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=timeout_ms)
    page.locator(marker).first.wait_for(timeout=timeout_ms)
    page.wait_for_function(SETTLED, timeout=timeout_ms, polling=100)


def visit(url: str, pages: dict[str, tuple[str, str]], artifacts: Path, prefix: str) -> dict[str, list[float]]:
    """Open every page by address (a fresh session each), then again through the sidebar like a person;
    fail on any exception shown; screenshots kept. Seconds to a settled page, per visit."""
    timings: dict[str, list[float]] = {}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for visit_name in ("first", "again"):
                for title, (path, marker) in pages.items():
                    t0 = time.perf_counter()
                    if visit_name == "first":
                        page.goto(f"{url}/{path}")
                    else:
                        page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
                    settle(page, title, marker)
                    timings.setdefault(title, []).append(time.perf_counter() - t0)
                    shot = artifacts / f"{prefix}{visit_name}_{path or 'runs'}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {title}: {shot}"
                    assert "Traceback" not in page.inner_text("body"), f"traceback on {title}: {shot}"
                    if title == "Lorenz96":  # X over time and error vs time
                        assert page.locator('[data-testid="stVegaLiteChart"]').count() == 2
                    if title == "MMGP" and prefix:  # a smoke run: interactive 3D scenes, each a WebGL canvas
                        assert_3d_scenes(page)
                    if title == "Run":
                        assert page.get_by_role("tab").count() == 5
        finally:
            browser.close()
    print(f"{prefix}browser page load, first and after (s):",
          {k: [round(x, 2) for x in v] for k, v in timings.items()}, "screenshots:", artifacts)
    return timings


def assert_3d_scenes(page) -> None:
    frames = page.locator('[data-testid="stIFrame"]')
    assert frames.count() >= 2, "prediction and standard deviation in 3D"
    for i in range(frames.count()):
        page.frame_locator('[data-testid="stIFrame"]').nth(i).locator("canvas").first.wait_for(timeout=30_000)


def test_every_page_in_a_real_browser(app_url, artifacts):
    timings = visit(app_url, PAGES, artifacts, "")
    assert len(list(artifacts.glob("again_*.png"))) == len(PAGES)
    slow = {k: v[1] for k, v in timings.items() if v[1] > TARGET_S}
    assert not slow, slow


def test_every_family_page_explores_a_smoke_run_in_a_real_browser(family_app_url, artifacts):
    timings = visit(family_app_url, FAMILY_PAGES, artifacts, "families_")
    slow = {k: v[1] for k, v in timings.items() if v[1] > TARGET_S}
    assert not slow, slow
