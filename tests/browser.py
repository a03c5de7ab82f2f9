"""What the browser tests share: Debian's Chromium driven by Playwright, numbered screenshots
of each step, a JupyterLab server on a free local port, and notebooks run in it as a person
runs them (Run All Cells).

Chromium is the system's (``make browser`` installs it with apt); Playwright's own browser
download is never used. Without Chromium or Playwright the tests are skipped with a one-line
reason (``skip_reason``); ``MURA_CHROMIUM`` names another executable.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from mura_core.progress import BATCH_ENV

CHROMIUM_ENV = "MURA_CHROMIUM"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 900}
LAB_START_SECONDS = 90


def chromium_path() -> str | None:
    """The Chromium to drive: ``MURA_CHROMIUM`` when set, else chromium on the PATH."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if Path(given).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here (one line), or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: run `make test` (it installs the browser extra)"
    if chromium_path() is None:
        where = os.environ.get(CHROMIUM_ENV) or "chromium on the PATH"
        return f"no Chromium ({where}): `make browser` installs Debian's chromium with apt"
    return None


def needs_browser():
    """A module's ``pytestmark``: skip it, with the reason, where no browser can run."""
    reason = skip_reason()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


class Screenshots:
    """Numbered screenshots of each step of a test, in ``folder``: ``take(page, "opened")``
    writes ``01-opened.png``. ``named_on_failure`` adds the folder to a failing test's error."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, page, step: str, full_page: bool = False) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        return path

    @contextlib.contextmanager
    def named_on_failure(self, page=None):
        try:
            yield self
        except BaseException as exc:
            if page is not None:
                with contextlib.suppress(Exception):
                    self.take(page, "at-failure", full_page=True)
            exc.add_note(f"screenshots of each step: {self.folder}")
            raise


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Playwright's ``Browser``), closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab: its base URL, token and log file."""

    def __init__(self, url: str, token: str, log: Path):
        self.url, self.token, self.log = url, token, log

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"


@contextlib.contextmanager
def lab_server(root: Path, home: Path):
    """JupyterLab from this Python's environment serving ``root`` on a free port of
    127.0.0.1 with a fresh token; its settings, workspaces and runtime files under ``home``
    (so nothing of a person's own Lab is read or changed, and no news is fetched). Its
    kernels are live frontends' kernels (``BATCH_ENV`` removed). Stopped on the way out."""
    port, token = free_port(), secrets.token_hex(16)
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if k != BATCH_ENV}
    env.update(JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"))
    log = home / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.port_retries=0", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
           "--allow-root"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LAB_START_SECONDS
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited ({proc.returncode}); see {log}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not answer in {LAB_START_SECONDS} s; "
                                         f"see {log}") from None
                time.sleep(0.3)
        yield Lab(url, token, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lab_notebook(source: Path, folder: Path, **parameters) -> Path:
    """A copy of the notebook ``source`` in ``folder`` whose ``parameters`` cell sets
    ``parameters`` (each ``name = value`` line replaced, the others kept)."""
    nb = nbformat.read(str(source), as_version=4)
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    lines = cell.source.splitlines()
    for name, value in parameters.items():
        at = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        assert at, f"{source.name} has no parameter {name!r}"
        lines[at[0]] = f"{name} = {value!r}"
    cell.source = "\n".join(lines)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    nbformat.write(nb, str(target))
    return target


def open_notebook(page, lab: Lab, name: str, timeout_s: float = 60.0) -> None:
    """Open a notebook in Lab and wait for its kernel to have started and be idle."""
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout_s * 1000)
    wait_for_idle_kernel(page, timeout_s)


def wait_for_idle_kernel(page, timeout_s: float) -> None:
    """Until the status bar says the kernel is idle ("Python 3 (ipykernel) | Idle")."""
    page.wait_for_function(
        """() => /\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar')?.textContent || '')""",
        timeout=timeout_s * 1000)


_PROMPTS = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
                     .map(p => p.textContent.trim())"""


def run_all(page, timeout_s: float = 240.0) -> None:
    """Run > Run All Cells, as a person would from the menu, and wait until every code cell
    has run (an execution count in its prompt) and the kernel is idle. A click that a kernel
    still connecting missed (no prompt changes in 15 s) is made once more."""
    for attempt in range(2):
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
        try:
            page.wait_for_function(f"() => ({_PROMPTS})().some(t => /\\[(\\*|\\d+)\\]/.test(t))",
                                   timeout=15_000)
            break
        except Exception:
            if attempt:
                raise
    page.wait_for_function(f"() => ({_PROMPTS})().every(t => /\\[\\d+\\]/.test(t))",
                           timeout=timeout_s * 1000)
    wait_for_idle_kernel(page, timeout_s)


def save(page, path: Path, timeout_s: float = 30.0) -> nbformat.NotebookNode:
    """File > Save (Ctrl+S) and the notebook as Lab saved it, outputs and all."""
    before = path.stat().st_mtime_ns
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + timeout_s
    while path.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"Lab did not save {path.name} in {timeout_s:.0f} s")
        time.sleep(0.2)
    time.sleep(0.5)  # the write is atomic, but give the contents manager its last flush
    return nbformat.read(str(path), as_version=4)


def outputs(nb) -> list:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
