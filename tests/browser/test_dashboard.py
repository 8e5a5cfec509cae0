"""The dashboard in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium)
against a controller fed by a real lab run.

One lab for the module (examples/three-tier, a controller and one agent per node,
zonewall.lab.managed): the policy is uploaded, one rule is added through the API
(revision 2, so there is a diff to show), and two probes are refused by the kernel
(web1 -> db1 tcp/5432 and web1 -> app1 tcp/9999, each its zone's `default-in`), so
the log holds real NFLOG records. Then, in the browser: every page renders, the log
filters narrow to the matching record (and the live log picks up a new one), the
trace form answers with the analyzer's verdict, and a viewer cannot change anything.

Kernel tests (the lab needs root). A missing chromium or Playwright FAILS them: they
are never skipped for it. With $ZONEWALL_SCREENSHOTS=DIR the main pages are also
saved as PNGs there (tools/screenshots.py: docs/screenshots/).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.conftest import _kernel_check
from tests.kernel.test_logs_pipeline import records, until
from tests.labtools import managed_lab
from zonewall.lab.managed import ManagedLab
from zonewall.lab.probing import Service, probe
from zonewall.policy.loader import load_policy

pytestmark = pytest.mark.kernel

THREE_TIER = Path(__file__).resolve().parents[2] / "examples" / "three-tier" / "policy"
CHROMIUM = "/usr/bin/chromium"
PARTNER_RULE = {"id": "partner-8443", "direction": "in", "action": "accept", "from": "203.0.113.10", "tcp": 8443}
# a failure detector, not a speed bound: on a loaded CI machine (two test workers, kernel
# tests beside) a page load once took longer than 10 s
TIMEOUT_MS = 30_000


def refused(lab: ManagedLab, source: str, target: str, port: int) -> None:
    """A probe the kernel refuses (and logs), and its record in the API."""
    since = time.time() - 1
    assert probe(lab.lab, load_policy(THREE_TIER), f"vm:{source}", f"vm:{target}", Service("tcp", port), "ipv4", timeout=0.5).verdict == "blocked"
    until(lambda: records(lab, vm=target, port=port, since=since), 5.0, f"{source} -> {target}:{port} in the log")


@pytest.fixture(scope="module")
def managed(request: pytest.FixtureRequest) -> Iterator[ManagedLab]:
    _kernel_check(request.config)
    # the agents inherit ZONEWALL_COUNTER_INTERVAL: hit counts show up quickly
    with managed_lab(THREE_TIER, "zonewall-browser-", {"ZONEWALL_COUNTER_INTERVAL": "0.5"}) as lab:
        added = lab.api("POST", "/vms/web1/rules", json={"rule": PARTNER_RULE, "message": "partner reaches web1 on 8443"})
        assert added.status_code == 201, added.text
        lab.wait_converged(added.json()["revision"]["number"])
        refused(lab, "web1", "db1", 5432)
        refused(lab, "web1", "app1", 9999)
        # db1's default-in counter has counted the refused probe on node2
        until(lambda: any(r["scope"] == "db1" and r["rule"] == "default-in" and r["packets"] > 0
                          for r in lab.api("GET", "/counters").json()["rules"]), 10.0, "db1's default-in counter")
        yield lab


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium; `make deps` does it)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"browser tests need Playwright (the test extras of pyproject.toml): {exc}", pytrace=False)
    with sync_playwright() as playwright:
        # root in a container: Chromium's own sandbox needs user namespaces it may not get
        found = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield found
        finally:
            found.close()


def logged_in(browser: Any, lab: ManagedLab, token: str) -> Any:
    """A fresh browser context (its own cookies) logged in through the login form."""
    assert lab.controller is not None
    context = browser.new_context(base_url=lab.controller.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto("/ui/")
    assert page.url.endswith("/ui/login")  # not logged in: sent to the login form
    page.get_by_label("API token (admin or viewer)").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/ui/")
    return page


@pytest.fixture(scope="module")
def admin(browser: Any, managed: ManagedLab) -> Iterator[Any]:
    page = logged_in(browser, managed, managed.admin_token)
    yield page
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


@pytest.fixture(scope="module")
def viewer(browser: Any, managed: ManagedLab) -> Iterator[Any]:
    created = managed.api("POST", "/tokens", json={"role": "viewer", "name": "browser-viewer"})
    assert created.status_code == 201, created.text
    page = logged_in(browser, managed, created.json()["token"])
    yield page
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


def shot(page: Any, name: str) -> None:
    """With $ZONEWALL_SCREENSHOTS, the page as DIR/NAME.png (tools/screenshots.py)."""
    target = os.environ.get("ZONEWALL_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def visit(page: Any, path: str, heading: str) -> Any:
    response = page.goto(path)
    assert response is not None and response.status == 200, path
    assert page.get_by_role("heading", level=1).inner_text() == heading
    return response


def cell_text(table: Any, row_header: str, column: int) -> str:
    return table.locator("tr", has=table.page.get_by_role("rowheader", name=row_header, exact=True)).locator("td").nth(column).inner_text()


def log_rows(page: Any) -> list[str]:
    return [text for text in page.locator("#rows tr").all_inner_texts() if "No records match" not in text]


def test_every_page_renders_with_the_lab_data(admin: Any, managed: ManagedLab) -> None:
    page = admin
    visit(page, "/ui/", "Overview")
    nodes = page.get_by_role("table", name="nodes")
    for node in ("node1", "node2"):
        assert cell_text(nodes, node, 0) == "up"
        assert cell_text(nodes, node, 1) == "ok"
        assert cell_text(nodes, node, 2) == "2"  # applied revision
        assert cell_text(nodes, node, 3) == "yes"
    assert page.locator("#current-revision").inner_text() == "2"
    shot(page, "overview")

    visit(page, "/ui/matrix", "Zone matrix")
    matrix = page.get_by_role("table", name="zone matrix")
    headers = matrix.locator("thead th").all_inner_texts()
    assert headers[1:] == ["app", "db", "dmz"]
    assert "tcp 8080" in cell_text(matrix, "dmz", headers.index("app") - 1)
    assert "tcp 5432" in cell_text(matrix, "app", headers.index("db") - 1)
    assert cell_text(matrix, "dmz", headers.index("db") - 1) == "-"  # dmz reaches nothing in db
    shot(page, "matrix")

    visit(page, "/ui/vms", "VMs")
    assert page.get_by_role("table", name="VMs").locator("tbody tr").count() == 3
    page.get_by_role("link", name="db1", exact=True).click()
    page.wait_for_url("**/ui/vms/db1")
    assert page.get_by_role("heading", level=1).inner_text() == "VM db1"
    inbound = page.get_by_role("table", name="rules in")
    rows = inbound.locator("tbody tr").all_inner_texts()
    order = [row.split("\t")[2] for row in rows]
    assert order[-2:] == ["db-from-app", "default-in"]  # zone rule, then the default, last
    default = inbound.locator("tbody tr").last.locator("td")
    assert int(default.nth(5).inner_text()) >= 1  # the refused probe's hit, from the kernel's counter
    shot(page, "vm")

    visit(page, "/ui/logs", "Denied packets")
    texts = log_rows(page)
    assert any("10.0.2.30:5432" in t and "default-in" in t and "db1" in t and "drop" in t for t in texts), texts
    assert any("10.0.2.20:9999" in t and "app1" in t for t in texts), texts
    shot(page, "logs")

    visit(page, "/ui/revisions", "Revisions")
    history = page.get_by_role("table", name="revisions")
    assert history.locator("tbody tr").count() == 2
    assert "partner reaches web1 on 8443" in history.inner_text()
    page.get_by_role("link", name="2", exact=True).click()
    page.wait_for_url("**/ui/revisions/2")
    diff = page.get_by_role("table", name="semantic diff").locator("tbody tr").all_inner_texts()
    assert len(diff) == 1 and diff[0].startswith("opened") and "outside:203.0.113.10" in diff[0] and "tcp 8443" in diff[0], diff
    assert "partner-8443" in diff[0]
    assert page.get_by_role("button", name="Roll back to this revision").count() == 0  # the current revision: nothing to roll back to
    shot(page, "revision")
    visit(page, "/ui/revisions/1", "Revision 1")
    assert page.get_by_role("button", name="Roll back to this revision").is_visible()  # an admin may

    visit(page, "/ui/trace", "Would this get through?")
    assert page.get_by_role("button", name="Would it get through?").is_visible()


def test_log_search_filters_narrow_to_the_matching_record_and_the_live_log_follows(admin: Any, managed: ManagedLab) -> None:
    page = admin
    visit(page, "/ui/logs", "Denied packets")
    assert len(log_rows(page)) >= 2
    form = page.get_by_role("form", name="filters")
    form.get_by_label("VM", exact=True).fill("db1")
    form.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*/ui/logs\?.*vm=db1.*"))
    texts = log_rows(page)
    assert texts and all("db1" in t and ":5432" in t for t in texts), texts
    assert not any("9999" in t for t in texts)

    form = page.get_by_role("form", name="filters")
    form.get_by_label("VM", exact=True).fill("")
    form.get_by_label("port", exact=True).fill("9999")
    form.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*port=9999.*"))
    texts = log_rows(page)
    assert len(texts) == 1 and "app1" in texts[0] and "10.0.1.10" in texts[0], texts

    form = page.get_by_role("form", name="filters")
    form.get_by_label("port", exact=True).fill("")
    form.get_by_label("address/CIDR").fill("10.0.2.30/32")
    form.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*address=10\.0\.2\.30.*"))
    assert all("10.0.2.30" in t for t in log_rows(page))
    page.get_by_label("text", exact=True).fill("no-such-thing")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*q=no-such-thing.*"))
    assert page.locator("#rows").inner_text().strip() == "No records match."

    # the live log: a record made after the page was loaded appears without a reload
    page.goto("/ui/logs?vm=db1")
    assert not any(":5433" in t for t in log_rows(page))
    assert probe(managed.lab, load_policy(THREE_TIER), "vm:web1", "vm:db1", Service("tcp", 5433), "ipv4", timeout=0.5).verdict == "blocked"
    page.locator("#rows tr", has_text="10.0.2.30:5433").wait_for(timeout=TIMEOUT_MS)
    assert all("db1" in t for t in log_rows(page))


@pytest.mark.parametrize(("source", "target", "port", "verdict", "rule"), [
    ("vm:web1", "vm:db1", "5432", "drop", "default-in"),
    ("vm:app1", "vm:db1", "5432", "accept", "db-from-app"),
    ("outside:203.0.113.10", "vm:web1", "8443", "accept", "partner-8443"),
])
def test_trace_form_answers_with_the_verdict_and_the_deciding_rule(viewer: Any, source: str, target: str, port: str, verdict: str, rule: str) -> None:
    page = viewer
    visit(page, "/ui/trace", "Would this get through?")
    form = page.get_by_role("form", name="flow")
    form.get_by_label("from", exact=True).fill(source)
    form.get_by_label("to", exact=True).fill(target)
    form.get_by_label("protocol").select_option("tcp")
    form.get_by_label("port or ICMP type").fill(port)
    form.get_by_role("button", name="Would it get through?").click()
    page.wait_for_url("**/ui/trace?**")
    assert page.locator("#verdict").inner_text() == f"Verdict: {verdict}"
    assert rule in page.get_by_role("table", name="deciding rules").inner_text()
    if rule == "default-in":
        shot(page, "trace")


def test_a_viewer_sees_every_page_but_cannot_change_anything(viewer: Any, managed: ManagedLab) -> None:
    page = viewer
    for path, heading in (("/ui/", "Overview"), ("/ui/matrix", "Zone matrix"), ("/ui/vms", "VMs"), ("/ui/vms/web1", "VM web1"),
                          ("/ui/logs", "Denied packets"), ("/ui/revisions", "Revisions"), ("/ui/revisions/1", "Revision 1")):
        visit(page, path, heading)
    assert "(viewer)" in page.locator("header").inner_text()
    assert page.locator("form[action$='/rollback']").count() == 0
    assert page.get_by_role("button", name="Roll back to this revision").count() == 0
    assert "cannot roll back" in page.locator("main").inner_text()
    # the POST itself, with the session's cookie and its valid CSRF token, is refused
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post("/ui/revisions/1/rollback", form={"csrf": csrf or "", "message": "viewer tries"}, max_redirects=0)
    assert answer.status == 403
    assert managed.api("GET", "/policy").json()["revision"] == 2  # nothing changed
