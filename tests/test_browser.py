"""The admin UI in a real browser (headless Chromium through selenium), against the demo's stack:
Deskroute served by waitress, the simulated Zendesk for the live group list, sample tickets routed.

Screenshots of each step land in tests/artifacts/browser/ (CI keeps them). Without Chromium and its
driver (Debian: chromium, chromium-driver) the test is skipped, saying so.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.demo import Demo
from helpers import PROJECT, chromium

ARTIFACTS = Path(__file__).parent / "artifacts" / "browser"
PASSWORD = "browser-test-password"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    binary, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # No background networking: this machine's closed network would refuse Chromium's own connections.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Demo]:
    for name in ("ZENPY_FORCE_NETLOC", "ZENPY_FORCE_SCHEME"):
        monkeypatch.setenv(name, "")  # the demo points zenpy at its simulator; restored afterwards
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT / "mappings", mappings)  # the test edits these, never the project's
    running = Demo(workdir=tmp_path, admin_password=PASSWORD, mappings_dir=mappings)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def text(driver: Any, css: str) -> str:
    """The element's text, once the page that has it has loaded (a click returns before that)."""
    element = WebDriverWait(driver, 15).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))
    return str(element.text)


def test_admin_logs_in_edits_a_mapping_and_exports_corrections(browser: Any, demo: Demo) -> None:
    ids = demo.send_samples()
    assert demo.wait(ids)
    triage_group = int(demo.services.mappings["zendesk"].triage.group_id)
    moved = next(i for i in ids if demo.fake.tickets[i]["group_id"] == triage_group)
    demo.reroute(moved, 360000000101)  # an agent sends a triaged ticket to Billing: a correction
    assert len(demo.wait_for_corrections(1)) == 1
    wait = WebDriverWait(browser, 15)

    browser.get(f"{demo.url}/admin/")
    wait.until(expected_conditions.presence_of_element_located((By.ID, "password")))
    shot(browser, "1-login")
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "Wrong password" in text(browser, "[role=alert]")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    wait.until(expected_conditions.presence_of_element_located((By.ID, "tickets-today")))
    assert text(browser, "#tickets-today") == str(len(ids))
    assert browser.find_elements(By.CSS_SELECTOR, "svg")  # the category-mix chart
    shot(browser, "2-overview")

    browser.find_element(By.LINK_TEXT, "Mappings").click()
    wait.until(expected_conditions.element_to_be_clickable((By.ID, "edit-billing"))).click()
    group = wait.until(expected_conditions.presence_of_element_located((By.ID, "zendesk_group_id")))
    assert group.get_attribute("value") == "360000000101"
    group.clear()
    group.send_keys("999")
    browser.find_element(By.ID, "save").click()
    error = wait.until(expected_conditions.presence_of_element_located((By.ID, "error")))
    assert "group 999 doesn't exist in zendesk" in error.text
    shot(browser, "3-validation-error")

    group = browser.find_element(By.ID, "zendesk_group_id")
    group.clear()
    group.send_keys("360000000105")
    browser.find_element(By.ID, "save").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "history")))
    assert text(browser, "#zendesk-billing") == "360000000105"
    history = text(browser, "#history")
    assert "zendesk.yaml" in history and "category billing" in history and "admin" in history
    live = demo.services.store.configs.latest()  # the edit is stored in the database, not in the files
    assert live is not None and "group_id: 360000000105" in live.files["zendesk.yaml"]
    shot(browser, "4-saved-with-history")

    browser.find_element(By.LINK_TEXT, "Corrections").click()
    wait.until(expected_conditions.presence_of_element_located((By.LINK_TEXT, "Download CSV")))
    assert f"zendesk #{moved}" in browser.page_source
    shot(browser, "5-corrections")
    browser.find_element(By.LINK_TEXT, "Download CSV").click()
    target = browser.downloads / "deskroute-corrections.csv"
    deadline = time.monotonic() + 15
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.exists(), f"no download in {list(browser.downloads.iterdir())}"
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
    assert [(r["platform"], r["ticket_id"]) for r in rows] == [("zendesk", str(moved))]


def test_admin_connects_zendesk_through_its_consent_screen(browser: Any, demo: Demo) -> None:
    wait = WebDriverWait(browser, 15)
    browser.get(f"{demo.url}/admin/zendesk")
    wait.until(expected_conditions.presence_of_element_located((By.ID, "password"))).send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "client credentials" in text(browser, "#mode")  # the demo starts on client credentials
    shot(browser, "6-zendesk-connection")
    browser.find_element(By.ID, "connect").click()

    allow = wait.until(expected_conditions.element_to_be_clickable((By.ID, "allow")))  # Zendesk's consent page
    assert browser.current_url.startswith(f"http://{demo.fake.address}/oauth/authorizations/new?")
    shot(browser, "7-zendesk-consent")
    allow.click()

    assert text(browser, "#message") == "Connected to Zendesk as Ada Admin <ada@example.com>."
    assert browser.current_url.startswith(f"{demo.url}/admin/zendesk")
    assert "connected by an admin" in text(browser, "#mode") and text(browser, "#status") == "working"
    assert text(browser, "#connected-as") == "Ada Admin <ada@example.com>" and text(browser, "#scope") == "read write"
    shot(browser, "8-zendesk-connected")
    ids = demo.send_samples(first_id=2001)[:1]  # routed with the new connection's token
    assert demo.wait(ids)
    [write] = [a for a in demo.fake.audits[ids[0]] if a["via"]["channel"] == "api"]
    assert write["author_id"] == 900002

    connected_page = browser.find_element(By.ID, "message")
    browser.find_element(By.ID, "disconnect").click()
    WebDriverWait(browser, 15).until(expected_conditions.staleness_of(connected_page))
    assert text(browser, "#message").startswith("Disconnected.")
    assert "client credentials" in text(browser, "#mode")
