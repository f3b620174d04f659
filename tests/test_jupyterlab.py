"""JupyterLab as a user meets it: a real headless Chromium opens the notebooks, the user sets the parameters cell
to the smoke profile, runs every cell from the Run menu, and reads what the cells show.

The browser is Debian's ``chromium`` with its ``chromedriver`` (``make browser``), driven by selenium with both
paths given, so nothing is downloaded. Without them the test skips with one line, except under CI (``CI`` set, as
``.ci/run`` runs it), where it fails: CI installs them, so their absence there is a broken setup. JupyterLab
serves a copy of ``notebooks/`` (the user's edit and JupyterLab's autosave must not touch the committed notebooks),
listens on 127.0.0.1 with a random token, and runs the ``redpo`` kernel of this interpreter. Screenshots are saved
in the test's tmp folder and their paths printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redpo.config import REPO_ROOT

NOTEBOOKS = ("00_data.ipynb", "01_baseline_prompting.ipynb")
"""The data notebook, then one model notebook (generation through the smoke llama-server), in the order a user
runs them: 01 reads the K-shot splits that 00 writes."""
RUN_TIMEOUT = 900
"""Seconds one notebook may take from Run All to an idle kernel (01 on smoke takes about a minute alone)."""


def _browser_paths() -> tuple[str, str]:
    """Debian's chromium and chromedriver. Missing, the test skips on a developer's machine (``make browser`` needs
    root) but fails under CI, which installs them (``.ci/run``), so that CI never passes without running it."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver and importlib.util.find_spec("selenium")):
        why = ("JupyterLab browser test: no headless Chromium (Debian's chromium + chromium-driver, and selenium); "
               "`make browser` installs them as root")
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI (.ci/run) must have them")
        pytest.skip(why)
    return chromium, driver


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_a_missing_browser_skips_locally_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="make browser"):
        _browser_paths()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except OSError:
        return 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[dict[str, Any]]:
    """A JupyterLab server on a copy of the notebooks, with its own config, settings and workspace folders."""
    _browser_paths()
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    root.mkdir()
    for name in NOTEBOOKS:
        shutil.copy2(REPO_ROOT / "notebooks" / name, root / name)
    kernel = base / "share" / "kernels" / "redpo"  # `redpo`, as the notebooks name it, running this interpreter
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "redpo", "language": "python"}))
    news = base / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no pop-up over the cells
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "REDPO_RESULTS_DIR": str(base / "results"), "REDPO_DATA_DIR": str(data_root),
           "JUPYTER_CONFIG_DIR": str(base / "config"), "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
           "JUPYTER_PATH": str(base / "share"), "PYTHONPATH": os.pathsep.join(
               [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
           f"--LabApp.user_settings_dir={base / 'settings'}", *(["--allow-root"] if os.geteuid() == 0 else [])]
    log = (base / "jupyterlab.log").open("w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while _get(f"{url}/api/status?token={token}") != 200:
            assert server.poll() is None and time.monotonic() < deadline, (base / "jupyterlab.log").read_text()[-3000:]
            time.sleep(0.5)
        yield {"url": url, "token": token, "root": root, "results": base / "results"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server shuts its kernels down (and their llama-servers)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(lab: dict[str, Any]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_paths()
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--disable-dev-shm-usage", "--window-size=1400,1800",
                *(["--no-sandbox"] if os.geteuid() == 0 else [])):  # Chromium's sandbox refuses root
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: str, check: Any, timeout: float, poll: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"JupyterLab: {what} not within {timeout:.0f} s")
        time.sleep(poll)


def _kernel_status(driver: Any) -> str:
    """The status bar's ``redpo | Idle`` item (empty until the notebook's kernel is known)."""
    from selenium.webdriver.common.by import By

    return next((e.text for e in driver.find_elements(By.CSS_SELECTOR, ".jp-StatusBar-Item") if "redpo |" in e.text),
                "")


def _menu(driver: Any, menu: str, command: str) -> None:
    """Click ``menu`` in the menu bar, then the item that runs ``command``; accept a confirmation dialog."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][.//div[text()='{menu}']]").click()
    _wait(f"{command} in the {menu} menu", lambda: driver.find_elements(
        By.CSS_SELECTOR, f"li.lm-Menu-item[data-command='{command}']"), 10)[0].click()
    time.sleep(0.5)
    for button in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"):
        button.click()


def _run_notebook_as_a_user(driver: Any, lab: dict[str, Any], name: str, shots: Path) -> Path:
    """Open ``name``, set ``profile`` to smoke in its parameters cell, Run All Cells, wait, save; the saved file."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.get(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")  # reset: no tabs restored
    _wait(f"{name} with its redpo kernel idle", lambda: len(driver.find_elements(
        By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")) > 1 and "Idle" in _kernel_status(driver),
        180)
    notebook = driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    parameters = notebook.find_elements(By.CSS_SELECTOR, ".jp-CodeCell")[0]
    # The user's edit: double-click the profile's value ("cpu") and type the profile they want.
    value = _wait('the parameters cell\'s "cpu"', lambda: parameters.find_elements(
        By.XPATH, ".//div[contains(@class,'cm-line')][starts-with(normalize-space(.),'profile:')]"
                  "//span[normalize-space(.)='\"cpu\"']"), 30)[0]
    ActionChains(driver).double_click(value).send_keys("smoke").perform()
    first_line = parameters.find_element(By.CSS_SELECTOR, ".cm-line").text
    assert first_line.startswith('profile: str = "smoke"'), first_line
    _menu(driver, "Run", "runmenu:run-all")

    def finished() -> bool:
        """Idle, nothing queued, and every cell numbered, or a traceback shown (Run All stops at an error)."""
        prompts = [e.text for e in notebook.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
        failed = any("Traceback" in text for text in _rendered_outputs(driver))
        done = all(p.strip("[]: ").isdigit() for p in prompts) or failed
        return done and "[*]:" not in prompts and "Idle" in _kernel_status(driver)

    _wait(f"{name}: every cell run", finished, RUN_TIMEOUT, poll=2)
    _menu(driver, "File", "docmanager:save")
    saved = lab["root"] / name
    _wait(f"{name} saved with outputs", lambda: any(
        c.get("outputs") for c in json.loads(saved.read_text())["cells"] if c["cell_type"] == "code"), 30)
    widget = notebook.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-hprogress")
    if widget:  # the screenshot shows the first progress bar with the outputs around it
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", widget[0])
        time.sleep(0.5)
    shot = shots / f"{Path(name).stem}.png"
    driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    return saved


def _rendered_outputs(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.get_attribute("textContent") or "" for e in driver.find_elements(
        By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")]


@pytest.mark.slow
def test_notebooks_run_in_jupyterlab_without_errors_and_show_progress_as_widgets(
    lab: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    bars: dict[str, list[str]] = {}
    for name in NOTEBOOKS:
        saved = _run_notebook_as_a_user(browser, lab, name, tmp_path)
        cells = [c for c in json.loads(saved.read_text())["cells"] if c["cell_type"] == "code"]
        outputs = [o for c in cells for o in c.get("outputs", [])]
        errors = [f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error"]
        assert not errors, f"{name}: {errors}"
        assert all(c.get("execution_count") for c in cells), f"{name}: a cell was never run"
        rendered = _rendered_outputs(browser)
        assert rendered and not any("Traceback" in text for text in rendered), name
        raw = [text for text in rendered if "\x1b" in text or "\r" in text]
        assert not raw, f"{name}: raw terminal control characters shown: {raw[:2]!r}"
        # tqdm.auto in a kernel with ipywidgets draws a widget: an HBox of label, progress bar and counts
        shown = browser.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) "
                                                       ".jp-OutputArea-output .widget-hbox")
        bars[name] = [(e.get_attribute("textContent") or "").replace("\u2007", " ") for e in shown
                      if e.find_elements(By.CSS_SELECTOR, ".widget-hprogress")]
        saved_widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(saved_widgets) >= len(bars[name]), name
        # Kernels hold the results folder while they live, so the next notebook needs this one's kernel down.
        _menu(browser, "Kernel", "kernelmenu:shutdown")
        _wait(f"{name}'s kernel shut down", lambda: "Idle" not in _kernel_status(browser), 60)
    generation = [text for text in bars["01_baseline_prompting.ipynb"] if "generate baseline" in text]
    assert generation, bars  # 01's generation bar, drawn as a widget with its label and counts
    assert (lab["results"] / "smoke" / "generations").is_dir()  # 01 wrote to the user's results root
