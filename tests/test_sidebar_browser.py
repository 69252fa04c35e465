"""The helpdesk sidebar apps in a real browser (headless Chromium through selenium).

The built packages are unzipped and served over loopback; the page loads a stand-in for the helpdesk's client
library instead of the real one (Zendesk's ZAF SDK from static.zdassets.com, Freshworks' {{{appclient}}}),
which answers `client.request` / `invokeTemplate` from fixtures shaped like /apps/api's answers and records
what the app sends and sets. Screenshots land in tests/artifacts/browser/sidebar-*.png. Without Chromium and
its driver (Debian: chromium, chromium-driver) the tests are skipped, saying so.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.apps import build_freshdesk, build_zendesk
from connector.apps.package import ZAF_SDK
from connector.apps_api import app_token
from connector.cli import main
from helpers import PROJECT, chromium, cli_environment

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts" / "browser"
URL = "https://deskroute.example.com"
SUMMARY = "Billing · 92% · local model · keyword 'invoice'"
CATEGORIES = [
    {"name": "billing", "title": "Billing", "description": "Invoices, charges, payment methods."},
    {"name": "refunds_cancellation", "title": "Refunds cancellation", "description": "Refunds, cancelling."},
    {"name": "account_access", "title": "Account access", "description": "Logging in, 2FA, locked accounts."},
    {"name": "bug_report", "title": "Bug report", "description": "Something is broken."},
    {"name": "how_to", "title": "How to", "description": "How do I..."},
]


def decision(platform: str, ticket_id: str, groups: dict[str, str]) -> dict[str, Any]:
    """What GET /apps/api/tickets/<platform>/<id> answers for a ticket routed to Billing."""
    return {
        "platform": platform, "ticket_id": ticket_id, "state": "done", "summary": SUMMARY, "category": "billing",
        "confidence": 0.92, "tier": "local", "reason": "keyword 'invoice'", "group_id": groups["billing"],
        "triage": False, "language": "en", "sentiment": "neutral", "reroutes": [], "categories": CATEGORIES,
        "runner_ups": [  # refunds goes to Billing's group too: no use offering it as a move
            {"category": "refunds_cancellation", "title": "Refunds cancellation", "confidence": 0.05,
             "group_id": groups["billing"]},
            {"category": "account_access", "title": "Account access", "confidence": 0.04,
             "group_id": groups["account_access"]},
            {"category": "bug_report", "title": "Bug report", "confidence": 0.02, "group_id": groups["bug_report"]},
            {"category": "how_to", "title": "How to", "confidence": 0.01, "group_id": groups["how_to"]},
        ],
    }


ZENDESK_GROUPS = {"billing": "360000000101", "account_access": "360000000102", "bug_report": "360000000103",
                  "how_to": "360000000106"}
FRESHDESK_GROUPS = {"billing": "103000000101", "account_access": "103000000102", "bug_report": "103000000103",
                    "how_to": "103000000106"}

# ZAF's set() as the ticket sidebar's API documents it: a ticket's group is set through `ticket.assignee`
# with {groupId} (userId optional); there is no settable `ticket.group`. It answers {errors: {}, <path>: value},
# with an error under the path for anything else.
ZAF_SET = """
function zafSet(path, value) {
  window.__zaf.sets.push([path, value]);
  var out = {errors: {}};
  if (path === "ticket.assignee" && value && typeof value.groupId === "number") out[path] = value;
  else out.errors[path] = {message: "Deskroute's stub: " + path + " can't be set to that"};
  return Promise.resolve(out);
}
"""

# Stands in for Zendesk's ZAF SDK: ZAFClient.init() returns a client whose request() answers from
# window.__fixtures ({decision: {status, body}, feedback: {status, body}}) and whose calls land in window.__zaf.
ZAF_STUB = ZAF_SET + """
window.__zaf = {requests: [], sets: [], invokes: [], feedback: []};
window.__fixtures = FIXTURES;
function answer(fixture, resolve, reject) {
  setTimeout(function () {
    if (fixture.status < 300) resolve(fixture.body);
    else reject({status: fixture.status, responseJSON: fixture.body, responseText: JSON.stringify(fixture.body)});
  }, 20);
}
var client = {
  request: function (options) {
    window.__zaf.requests.push(JSON.parse(JSON.stringify(options)));
    return new Promise(function (resolve, reject) {
      if (/\\/feedback$/.test(options.url)) {
        window.__zaf.feedback.push(JSON.parse(options.data));
        answer(window.__fixtures.feedback, resolve, reject);
      } else {
        answer(window.__fixtures.decision, resolve, reject);
      }
    });
  },
  get: function (path) {
    var values = {"ticket.id": 4242, "currentUser": {id: 777, name: "Agent Smith"}};
    var out = {errors: {}};
    out[path] = values[path];
    return Promise.resolve(out);
  },
  set: zafSet,
  invoke: function (name, value) { window.__zaf.invokes.push([name, value]); return Promise.resolve({}); }
};
window.ZAFClient = {init: function () { return client; }};
"""

# Stands in for Freshworks' app client: app.initialized() gives a client whose request.invokeTemplate()
# answers from window.__fixtures and records into window.__fw.
FRESHWORKS_STUB = """
window.__fw = {templates: [], triggers: [], feedback: [], resizes: []};
window.__fixtures = FIXTURES;
var client = {
  events: {on: function (name, callback) { if (name === "app.activated") setTimeout(callback, 10); }},
  data: {get: function (name) {
    var values = {ticket: {ticket: {id: 99, subject: "Invoice"}}, loggedInUser: {loggedInUser: {id: 55}}};
    return Promise.resolve(values[name]);
  }},
  request: {invokeTemplate: function (name, options) {
    window.__fw.templates.push([name, options]);
    var fixture = name === "postFeedback" ? window.__fixtures.feedback : window.__fixtures.decision;
    if (name === "postFeedback") window.__fw.feedback.push(JSON.parse(options.body));
    return new Promise(function (resolve, reject) {
      setTimeout(function () {
        var reply = {status: fixture.status, headers: {}, response: JSON.stringify(fixture.body)};
        if (fixture.status < 300) resolve(reply); else reject(reply);
      }, 20);
    });
  }},
  interface: {trigger: function (action, payload) {
    window.__fw.triggers.push([action, payload]);
    return Promise.resolve({});
  }},
  instance: {resize: function (size) { window.__fw.resizes.push(size); }}
};
window.app = {initialized: function () { return Promise.resolve(client); }};
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    binary, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tmp_path_factory.mktemp("chromium-profile")
    # A sidebar's width; no background networking (this machine's closed network refuses Chromium's own calls).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--window-size=360,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """Serve a folder over loopback; returns its base URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def fixtures(decision_status: int = 200, decision_body: Any = None, feedback_status: int = 201,
             feedback_body: Any = None) -> dict[str, Any]:
    return {"decision": {"status": decision_status, "body": decision_body},
            "feedback": {"status": feedback_status, "body": feedback_body or {"status": "recorded"}}}


def zendesk_site(tmp_path: Path, fixture: dict[str, Any], url: str = URL, stub: str = ZAF_STUB) -> Path:
    site = tmp_path / "zendesk"
    with zipfile.ZipFile(build_zendesk(url, tmp_path / "zendesk.zip")) as archive:
        archive.extractall(site)
    iframe = site / "assets" / "iframe.html"
    html = iframe.read_text()
    assert html.count(ZAF_SDK) == 1  # the real page loads Zendesk's SDK; this one its stand-in
    iframe.write_text(html.replace(ZAF_SDK, "/stub/zaf_sdk.js"))
    (site / "stub").mkdir()
    (site / "stub" / "zaf_sdk.js").write_text(stub.replace("FIXTURES", json.dumps(fixture)))
    return site


def freshdesk_site(tmp_path: Path, fixture: dict[str, Any]) -> Path:
    site = tmp_path / "freshdesk"
    with zipfile.ZipFile(build_freshdesk(URL, tmp_path / "freshdesk.zip")) as archive:
        archive.extractall(site)
    index = site / "app" / "index.html"
    html = index.read_text()
    assert html.count("{{{appclient}}}") == 1  # Freshworks fills this in with its client library
    index.write_text(html.replace("{{{appclient}}}", "/stub/fw_client.js"))
    (site / "stub").mkdir()
    (site / "stub" / "fw_client.js").write_text(FRESHWORKS_STUB.replace("FIXTURES", json.dumps(fixture)))
    return site


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"sidebar-{name}.png"))


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = 10) -> Any:
    return WebDriverWait(driver, timeout).until(condition)


def text_of(driver: Any, css: str) -> str:
    """The element's text, once it has some (the app fills it in after the helpdesk answers)."""
    return str(wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).text))


def active(driver: Any) -> Any:
    return driver.switch_to.active_element


CONTRAST = """
function luminance(color) {
  var v = color.match(/[\\d.]+/g).slice(0, 3).map(function (c) {
    c = Number(c) / 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
}
function background(node) {
  for (; node && node.nodeType === 1; node = node.parentElement) {
    var c = getComputedStyle(node).backgroundColor, parts = c.match(/[\\d.]+/g);
    if (parts && (parts.length < 4 || Number(parts[3]) > 0)) return c;
  }
  return "rgb(255, 255, 255)";
}
return Array.prototype.map.call(document.querySelectorAll(arguments[0]), function (node) {
  var a = luminance(getComputedStyle(node).color), b = luminance(background(node));
  return [node.id || node.className || node.tagName, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
});
"""


# --- Zendesk ------------------------------------------------------------------------------------------------

def test_zendesk_sidebar_routes_and_sends_feedback(browser: Any, serve: Callable[[Path], str], tmp_path: Path) -> None:
    base = serve(zendesk_site(tmp_path, fixtures(decision_body=decision("zendesk", "4242", ZENDESK_GROUPS))))
    browser.get(f"{base}/assets/iframe.html")
    assert text_of(browser, "#dr-summary") == SUMMARY
    shot(browser, "zendesk-1-decision")

    [request] = browser.execute_script("return window.__zaf.requests")
    assert request["url"] == f"{URL}/apps/api/tickets/zendesk/4242" and request["type"] == "GET"
    assert request["secure"] is True and request["headers"] == {"Authorization": "Bearer {{setting.token}}"}

    routes = browser.find_elements(By.CSS_SELECTOR, "button.dr-route")
    assert [r.text for r in routes] == ["Route to Account access 4%", "Route to Bug report 2%"]
    routes[1].click()
    wait_for(browser, lambda d: d.execute_script("return window.__zaf.sets.length") == 1)
    assert browser.execute_script("return window.__zaf.sets") == [["ticket.assignee", {"groupId": 360000000103}]]
    assert text_of(browser, "#dr-status") == "Group set to Bug report. Submit the ticket to keep it."

    wrong = browser.find_element(By.ID, "dr-wrong")
    assert wrong.get_attribute("aria-expanded") == "false"
    assert not browser.find_element(By.ID, "dr-wrong-form").is_displayed()
    wrong.click()
    assert wrong.get_attribute("aria-expanded") == "true" and active(browser).get_attribute("id") == "dr-category"
    options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "dr-category")).options]
    assert options == ["", "refunds_cancellation", "account_access", "bug_report", "how_to"]  # not the chosen one
    browser.find_element(By.ID, "dr-send").click()
    assert text_of(browser, "#dr-form-error") == "Choose the right category first."
    assert browser.execute_script("return window.__zaf.feedback") == []

    Select(browser.find_element(By.ID, "dr-category")).select_by_visible_text("Refunds cancellation")
    assert browser.find_element(By.ID, "dr-form-error").text == ""  # choosing clears the complaint
    browser.find_element(By.ID, "dr-comment").send_keys("  Customer wants the money back, not a new invoice  ")
    shot(browser, "zendesk-2-wrong-form")
    browser.find_element(By.ID, "dr-send").click()
    wait_for(browser, lambda d: "Thanks, sent" in d.find_element(By.ID, "dr-status").text)
    assert browser.execute_script("return window.__zaf.feedback") == [
        {"verdict": "wrong", "category": "refunds_cancellation",
         "comment": "Customer wants the money back, not a new invoice", "agent_id": "777"}]
    post = browser.execute_script("return window.__zaf.requests")[-1]
    assert post["url"] == f"{URL}/apps/api/tickets/zendesk/4242/feedback" and post["type"] == "POST"
    assert post["contentType"] == "application/json" and post["secure"] is True
    assert post["headers"] == {"Authorization": "Bearer {{setting.token}}"}
    assert active(browser).get_attribute("id") == "dr-status"  # focus stays in the app, not lost to the body
    assert browser.execute_script("return window.__zaf.invokes")[-1][0] == "resize"
    shot(browser, "zendesk-3-sent")


def test_zendesk_sidebar_by_keyboard_with_visible_focus_and_contrast(browser: Any, serve: Callable[[Path], str],
                                                                    tmp_path: Path) -> None:
    base = serve(zendesk_site(tmp_path, fixtures(decision_body=decision("zendesk", "4242", ZENDESK_GROUPS))))
    browser.get(f"{base}/assets/iframe.html")
    text_of(browser, "#dr-summary")
    keys = ActionChains(browser)
    order = []
    for _ in range(4):
        keys.send_keys(Keys.TAB).perform()
        focused = active(browser)
        order.append(focused.get_attribute("id") or focused.text)
        style = browser.execute_script("var s = getComputedStyle(arguments[0]); return [s.outlineStyle, "
                                       "parseFloat(s.outlineWidth)]", focused)
        assert focused.tag_name == "button" and style[0] == "solid" and style[1] >= 2, (order, style)
    assert order == ["Route to Account access 4%", "Route to Bug report 2%", "dr-right", "dr-wrong"]
    shot(browser, "zendesk-4-keyboard-focus")

    keys.send_keys(Keys.ENTER).perform()  # opens the form and moves into it
    assert active(browser).get_attribute("id") == "dr-category"
    keys.send_keys(Keys.TAB).perform()
    assert active(browser).get_attribute("id") == "dr-comment"
    keys.send_keys("typed by keyboard", Keys.TAB).perform()
    assert active(browser).get_attribute("id") == "dr-send"
    keys.send_keys(Keys.ENTER).perform()
    assert text_of(browser, "#dr-form-error") == "Choose the right category first."
    assert active(browser).get_attribute("id") == "dr-category"
    keys.send_keys(Keys.ESCAPE).perform()
    assert active(browser).get_attribute("id") == "dr-wrong"
    assert not browser.find_element(By.ID, "dr-wrong-form").is_displayed()

    # Every control is a real button or a labelled form field; text keeps 4.5:1 contrast (WCAG AA).
    assert browser.execute_script("return document.querySelectorAll('[onclick], [role=button], a').length") == 0
    browser.find_element(By.ID, "dr-wrong").click()
    assert browser.execute_script("return Array.prototype.every.call(document.querySelectorAll('select, textarea'),"
                                  " function (e) { return e.labels.length === 1 && e.labels[0].textContent; })")
    ratios = browser.execute_script(CONTRAST, "#dr-summary, button, label, select, textarea")
    assert len(ratios) >= 9 and all(ratio >= 4.5 for _, ratio in ratios), ratios


@pytest.mark.parametrize(("status", "body", "message", "retry"), [
    (404, {"error": "Deskroute hasn't routed this ticket"}, "Deskroute hasn't routed this ticket.", False),
    (404, None, "Deskroute hasn't routed this ticket.", False),
    (401, {"error": "missing or wrong app token"}, "Deskroute refused this app's credentials.", False),
    (502, None, "Couldn't reach Deskroute (HTTP 502).", True),
])
def test_zendesk_sidebar_says_what_went_wrong(browser: Any, serve: Callable[[Path], str], tmp_path: Path,
                                             status: int, body: Any, message: str, retry: bool) -> None:
    base = serve(zendesk_site(tmp_path, fixtures(status, body)))
    browser.get(f"{base}/assets/iframe.html")
    assert text_of(browser, "#dr-message:not(.dr-loading)").startswith(message)
    assert bool(browser.find_elements(By.ID, "dr-retry")) is retry
    assert browser.find_element(By.ID, "deskroute").get_attribute("aria-busy") == "false"
    if retry:
        shot(browser, "zendesk-5-unreachable")
        browser.execute_script("window.__fixtures.decision = arguments[0]",
                               {"status": 200, "body": decision("zendesk", "4242", ZENDESK_GROUPS)})
        browser.find_element(By.ID, "dr-retry").click()
        assert text_of(browser, "#dr-summary") == SUMMARY


def test_zendesk_sidebar_for_a_triaged_ticket(browser: Any, serve: Callable[[Path], str], tmp_path: Path) -> None:
    triaged = decision("zendesk", "4242", ZENDESK_GROUPS) | {
        "summary": "Sent to triage · 41% · Claude · unsure between billing and account access", "category": None,
        "triage": True, "group_id": "360000000100",
        "reroutes": [{"at": "2026-01-05T10:00:00+00:00", "from_group_id": "360000000100",
                      "to_group_id": "360000000101", "category": "billing"}]}
    base = serve(zendesk_site(tmp_path, fixtures(decision_body=triaged)))
    browser.get(f"{base}/assets/iframe.html")
    assert text_of(browser, "#dr-summary").startswith("Sent to triage · 41%")
    assert text_of(browser, "#dr-rerouted") == "Re-routed by an agent to Billing."
    assert "dr-triage" in browser.find_element(By.CSS_SELECTOR, ".dr-decision").get_attribute("class")
    assert not browser.find_elements(By.ID, "dr-right")  # nothing to confirm
    # The ticket is in Billing's group now, which Refunds shares: the moves are elsewhere.
    routes = browser.find_elements(By.CSS_SELECTOR, "button.dr-route")
    assert [r.get_attribute("data-category") for r in routes] == ["account_access", "bug_report"]
    shot(browser, "zendesk-6-triage")


# --- Freshdesk ----------------------------------------------------------------------------------------------

def test_freshdesk_sidebar_routes_and_confirms(browser: Any, serve: Callable[[Path], str], tmp_path: Path) -> None:
    base = serve(freshdesk_site(tmp_path, fixtures(decision_body=decision("freshdesk", "99", FRESHDESK_GROUPS))))
    browser.get(f"{base}/app/index.html")
    assert text_of(browser, "#dr-summary") == SUMMARY
    [[name, options]] = browser.execute_script("return window.__fw.templates")
    assert name == "getDecision" and options == {"context": {"ticket_id": "99"}}
    shot(browser, "freshdesk-1-decision")

    browser.find_elements(By.CSS_SELECTOR, "button.dr-route")[0].click()
    wait_for(browser, lambda d: d.execute_script("return window.__fw.triggers.length") == 1)
    assert browser.execute_script("return window.__fw.triggers") == [
        ["setValue", {"id": "group", "value": 103000000102}]]
    assert text_of(browser, "#dr-status") == "Group set to Account access. Click Update to keep it."

    browser.find_element(By.ID, "dr-right").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "dr-status").text == "Thanks, noted.")
    assert browser.execute_script("return window.__fw.feedback") == [
        {"verdict": "right", "category": None, "comment": None, "agent_id": "55"}]
    name, options = browser.execute_script("return window.__fw.templates")[-1]
    assert name == "postFeedback" and options["context"] == {"ticket_id": "99"}
    assert browser.execute_script("return window.__fw.resizes.length") > 0
    shot(browser, "freshdesk-2-confirmed")


def test_freshdesk_sidebar_shows_a_rejected_category(browser: Any, serve: Callable[[Path], str],
                                                    tmp_path: Path) -> None:
    base = serve(freshdesk_site(tmp_path, fixtures(decision_body=decision("freshdesk", "99", FRESHDESK_GROUPS),
                                                   feedback_status=422,
                                                   feedback_body={"error": "unknown category 'how_to'"})))
    browser.get(f"{base}/app/index.html")
    text_of(browser, "#dr-summary")
    browser.find_element(By.ID, "dr-wrong").click()
    Select(browser.find_element(By.ID, "dr-category")).select_by_value("how_to")
    browser.find_element(By.ID, "dr-send").click()
    assert text_of(browser, "#dr-form-error") == "unknown category 'how_to'"
    assert browser.find_element(By.ID, "dr-send").is_enabled()  # the agent can pick again and resend
    assert browser.execute_script("return window.__fw.feedback")[0]["verdict"] == "wrong"


# --- against Deskroute's real /apps/api -----------------------------------------------------------------------

APP_TOKEN = "sidebar-browser-test-app-token-0123456789"

# A ZAF client whose request() goes through a stand-in for Zendesk's proxy (POST /zaf-proxy on the page's own
# server), which fills in {{setting.token}} server-side and calls only hosts in the manifest's domainWhitelist.
ZAF_PROXY_STUB = ZAF_SET + """
window.__zaf = {sets: [], invokes: []};
var ticket = FIXTURES;
var client = {
  request: function (options) {
    return fetch("/zaf-proxy", {method: "POST", body: JSON.stringify(options)})
      .then(function (reply) { return reply.json(); })
      .then(function (answer) {
        if (answer.status < 300) return answer.body;
        throw {status: answer.status, responseJSON: answer.body, responseText: JSON.stringify(answer.body)};
      });
  },
  get: function (path) {
    var out = {errors: {}};
    out[path] = {"ticket.id": ticket.id, "currentUser": {id: 4711}}[path];
    return Promise.resolve(out);
  },
  set: zafSet,
  invoke: function (name, value) { window.__zaf.invokes.push([name, value]); return Promise.resolve({}); }
};
window.ZAFClient = {init: function () { return client; }};
"""


def _proxy_handler(site: Path, token: str) -> Any:
    manifest = json.loads((site / "manifest.json").read_text())
    settings = {parameter["name"]: token for parameter in manifest["parameters"] if parameter.get("secure")}
    allowed = set(manifest["domainWhitelist"])

    class ZendeskProxy(_Quiet):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            options = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert options.get("secure") is True
            assert urllib.parse.urlsplit(options["url"]).hostname in allowed, options["url"]
            headers = {name: value.replace("{{setting.token}}", settings["token"])
                       for name, value in options.get("headers", {}).items()}
            if options.get("contentType"):
                headers["Content-Type"] = options["contentType"]
            data = options.get("data")
            request = urllib.request.Request(options["url"], method=options.get("type", "GET"), headers=headers,
                                             data=data.encode() if data else None)
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    status, body = reply.status, reply.read()
            except urllib.error.HTTPError as failure:
                status, body = failure.code, failure.read()
            answer = json.dumps({"status": status, "body": json.loads(body or b"null")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return functools.partial(ZendeskProxy, directory=str(site))


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from pydantic import SecretStr

    from connector.demo import Demo

    for name in ("ZENPY_FORCE_NETLOC", "ZENPY_FORCE_SCHEME"):
        monkeypatch.setenv(name, "")  # the demo points zenpy at its simulator; restored afterwards
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT / "mappings", mappings)
    running = Demo(workdir=tmp_path, mappings_dir=mappings)
    running.settings = running.settings.model_copy(update={"deskroute_app_token": SecretStr(APP_TOKEN)})
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_zendesk_sidebar_against_deskroutes_api(browser: Any, demo: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ids = demo.send_samples()
    assert demo.wait(ids)

    def api(ticket_id: int) -> Any:
        request = urllib.request.Request(f"{demo.url}/apps/api/tickets/zendesk/{ticket_id}",
                                         headers={"Authorization": f"Bearer {app_token(APP_TOKEN, 'zendesk')}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    views = {ticket_id: api(ticket_id) for ticket_id in ids}
    ticket_id = next(i for i, view in views.items()
                     if view["category"] and any(r["group_id"] != view["group_id"] for r in view["runner_ups"]))
    view = views[ticket_id]
    site = zendesk_site(tmp_path, {"id": ticket_id}, url=demo.url, stub=ZAF_PROXY_STUB)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(site, app_token(APP_TOKEN, "zendesk")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/assets/iframe.html")
        assert text_of(browser, "#dr-summary") == view["summary"]
        shot(browser, "zendesk-7-live-api")
        first = browser.find_elements(By.CSS_SELECTOR, "button.dr-route")[0]
        runner_up = next(r for r in view["runner_ups"] if r["category"] == first.get_attribute("data-category"))
        first.click()
        wait_for(browser, lambda d: d.execute_script("return window.__zaf.sets.length") == 1)
        assert browser.execute_script("return window.__zaf.sets") == [
            ["ticket.assignee", {"groupId": int(runner_up["group_id"])}]]

        browser.find_element(By.ID, "dr-wrong").click()
        Select(browser.find_element(By.ID, "dr-category")).select_by_value(runner_up["category"])
        browser.find_element(By.ID, "dr-comment").send_keys("the customer asks about something else, "
                                                            "write to ada@example.com")
        browser.find_element(By.ID, "dr-send").click()
        wait_for(browser, lambda d: "Thanks, sent" in d.find_element(By.ID, "dr-status").text)
        shot(browser, "zendesk-8-live-feedback")
    finally:
        server.shutdown()
        server.server_close()
    [correction] = [c for c in demo.services.store.corrections.find() if c["ticket_id"] == str(ticket_id)]
    assert correction["via"] == "agent_feedback" and correction["corrected_category"] == runner_up["category"]
    assert correction["agent_id"] == "4711"
    assert correction["comment"] == "the customer asks about something else, write to [EMAIL]"

    # The demo's workers fetch the ticket's text after the click; then the team lead's export has it all.
    wait_for(browser, lambda _: demo.services.store.corrections.for_ticket("zendesk", str(ticket_id))[0]["text"],
             timeout=30)
    cli_environment(monkeypatch, tmp_path, demo.settings.database_url)
    exported = CliRunner().invoke(main, ["corrections", "export", "--format", "jsonl"], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    [row] = [r for r in map(json.loads, exported.output.splitlines()) if r["ticket_id"] == str(ticket_id)]
    assert row["via"] == "agent_feedback" and row["status"] == "pending"
    assert row["corrected_category"] == row["label"] == runner_up["category"]
    assert row["predicted_category"] == view["category"]
    assert row["comment"] == "the customer asks about something else, write to [EMAIL]"
    assert row["text"] and "ada@example.com" not in exported.output
