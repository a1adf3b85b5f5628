"""The builder in a real browser: the Streamlit server plus headless Chromium.

Loads the padded LeNet, breaks conv2 with kernel_size 30, applies a fix, and saves
a screenshot of each state to artifacts/e2e/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "e2e"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,2400",
)
WAIT_S = 30

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
        "chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_health(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer on {url} within {WAIT_S} s")


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    port = _free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
        "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


# ---------------------------------------------------------------- page helpers


def _idle(driver) -> bool:
    """No script run in progress (Streamlit shows its status widget while running)."""
    return not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')


def wait_for_text(driver, text: str, where: str = "body") -> None:
    def shown(d) -> bool:
        found = d.find_elements(By.CSS_SELECTOR, where)
        return _idle(d) and any(text in element.text for element in found)

    WebDriverWait(driver, WAIT_S).until(shown, f"{text!r} never appeared in {where}")


def table_text(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, '[data-testid="stTable"]').text


def block_cards(driver) -> list[WebElement]:
    return driver.find_elements(
        By.CSS_SELECTOR, '[data-testid="stVerticalBlock"][class*="st-key-block_"]'
    )


def screenshot(driver, name: str) -> Path:
    """Save the window, with the pointer moved off any button's tooltip first."""
    title = driver.find_element(By.TAG_NAME, "h1")
    ActionChains(driver).move_to_element(title).perform()
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def choose(driver, key: str, option: str) -> None:
    """Pick `option` in the selectbox whose widget key is `key`."""
    driver.find_element(By.CSS_SELECTOR, f".st-key-{key} [role='combobox']").click()
    choices = WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "[role='option']")
    )
    next(c for c in choices if c.text.strip() == option).click()


def click_button(driver, key: str) -> None:
    button = driver.find_element(By.CSS_SELECTOR, f".st-key-{key} button")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()


def type_number(card: WebElement, field: str, value: int) -> None:
    box = card.find_element(By.CSS_SELECTOR, f"[class*='_{field}'] input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.ENTER)


# ---------------------------------------------------------------- the journey


def test_break_and_fix_padded_lenet(app_url: str, browser) -> None:
    browser.get(app_url)
    wait_for_text(browser, "Valid stack")
    wait_for_text(browser, "16x5x5", '[data-testid="stTable"]')
    screenshot(browser, "1-start")

    choose(browser, "preset_choice", "Padded LeNet")
    click_button(browser, "load_preset")
    wait_for_text(browser, "576", '[data-testid="stTable"]')
    table = table_text(browser)
    assert "3x36x36" in table and "16x6x6" in table
    screenshot(browser, "2-padded-lenet")

    conv2 = block_cards(browser)[4]
    assert "conv2" in conv2.text
    type_number(conv2, "kernel_size", 30)
    wait_for_text(browser, "does not run")
    conv2 = block_cards(browser)[4]
    assert "input 6x16x16 is smaller than kernel_size 30" in conv2.text
    assert "✗ does not run" in table_text(browser)
    screenshot(browser, "3-conv2-kernel-30")

    click_button(browser, "fix_0")
    wait_for_text(browser, "Valid stack")
    assert "does not run" not in table_text(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, ".st-key-fix_0")
    screenshot(browser, "4-fixed")


def test_sidebar_names_the_builder(app_url: str, browser) -> None:
    browser.get(app_url)
    wait_for_text(browser, "Valid stack")
    nav = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
    assert [link.text for link in nav] == ["Builder", "Train", "Runs", "Experiments"]


def test_toolbar_labels_fit_on_one_line(app_url: str, browser) -> None:
    # A laptop-sized window, where the toolbar's columns are narrowest.
    browser.set_window_size(1400, 1000)
    browser.get(app_url)
    wait_for_text(browser, "Valid stack")

    # A label that wraps ("num_clas / ses") is taller than a one-line one.
    one_line, num_classes = (
        WebDriverWait(browser, WAIT_S).until(
            lambda d, key=key: d.find_element(By.CSS_SELECTOR, f".st-key-{key} label")
        )
        for key in ("in_channels", "num_classes")
    )
    assert num_classes.size["height"] == one_line.size["height"]
    screenshot(browser, "5-toolbar")
    browser.set_window_size(1600, 2400)
