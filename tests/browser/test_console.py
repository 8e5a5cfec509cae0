"""The dashboard's working pages in a real headless Chromium against a live lab.

The edit flow end to end: an admin edits web1's rules in the browser, previews the
semantic diff, commits; every node applies the revision, a real packet that was
refused before is delivered, and the revision is in the history. The new pages
(nodes, a node, zones, the graphs, the API docs offline) render with the lab's data
and load nothing from another host; a viewer gets no editor and its POST is refused.
At 50 zones (a synthetic policy, no lab needed) the zone matrix fits a 1280-pixel
screen. With $ZONEWALL_SCREENSHOTS=DIR the pages are saved there at 1280x800
(tools/screenshots.py: docs/screenshots/).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.browser.test_dashboard import admin, browser, logged_in, refused, visit  # noqa: F401 - admin, browser: fixtures (admin uses this module's lab)
from tests.controller.live import LiveController, live_controller
from tests.kernel.conftest import _kernel_check
from tests.labtools import managed_lab
from zonewall.lab.managed import ManagedLab
from zonewall.lab.probing import Service, probe
from zonewall.policy.loader import load_policy

THREE_TIER = Path(__file__).resolve().parents[2] / "examples" / "three-tier" / "policy"
PARTNER = "- {id: partner-8443, direction: in, action: accept, from: 203.0.113.10, tcp: 8443}"


def shot(page: Any, name: str) -> None:
    """With $ZONEWALL_SCREENSHOTS, what a 1280x800 screen shows of the page."""
    target = os.environ.get("ZONEWALL_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=False)


def same_origin_only(page: Any) -> list[str]:
    """Records every request the page makes to another origin (there must be none)."""
    foreign: list[str] = []
    origin = urlparse(page.url)
    page.on("request", lambda request: foreign.append(request.url)
            if urlparse(request.url).netloc not in ("", origin.netloc) and not request.url.startswith(("data:", "blob:")) else None)
    return foreign


@pytest.fixture(scope="module")
def managed(request: pytest.FixtureRequest) -> Iterator[ManagedLab]:
    _kernel_check(request.config)
    with managed_lab(THREE_TIER, "zonewall-console-", {"ZONEWALL_COUNTER_INTERVAL": "0.5"}) as lab:
        refused(lab, "web1", "db1", 5432)
        refused(lab, "web1", "app1", 9999)
        yield lab


@pytest.mark.kernel
def test_edit_preview_commit_enforced_and_in_the_history(admin: Any, managed: ManagedLab) -> None:
    page = admin
    partner = lambda: probe(managed.lab, load_policy(THREE_TIER), "outside:203.0.113.10", "vm:web1", Service("tcp", 8443), "ipv4", timeout=0.5).verdict
    assert partner() == "blocked"
    visit(page, "/ui/vms/web1", "VM web1")
    page.get_by_role("link", name="Edit web1's rules").click()
    page.wait_for_url("**/ui/edit/vms/web1")
    editor = page.get_by_label("Rules")
    assert editor.input_value() == ""  # web1 has no rules of its own yet
    editor.fill(PARTNER + "\n")
    page.get_by_label("Message (why)").fill("partner reaches web1 on 8443")
    page.get_by_role("button", name="Preview the change").click()
    page.wait_for_load_state()
    diff = page.get_by_role("table", name="semantic diff").locator("tbody tr").all_inner_texts()
    assert len(diff) == 1 and diff[0].startswith("opened") and "outside:203.0.113.10" in diff[0] and "tcp 8443" in diff[0], diff
    assert "+    rules:" in page.get_by_label("document diff").inner_text()
    shot(page, "edit")
    assert managed.api("GET", "/policy").json()["revision"] == 1  # the preview committed nothing
    page.get_by_role("button", name=re.compile("Commit as revision 2")).click()
    page.wait_for_url("**/ui/revisions/2")
    assert "partner reaches web1 on 8443" in page.locator("main").inner_text()
    managed.wait_converged(2)
    assert partner() == "delivered"  # enforced by the kernel of node1
    visit(page, "/ui/revisions", "Revisions")
    history = page.get_by_role("table", name="revisions").locator("tbody tr").all_inner_texts()
    assert history[0].startswith("2") and "partner reaches web1 on 8443" in history[0] and "lab-admin" in history[0]


@pytest.mark.kernel
def test_new_pages_render_with_the_lab_data_and_load_nothing_from_elsewhere(admin: Any, managed: ManagedLab) -> None:
    page = admin
    visit(page, "/ui/", "Overview")
    foreign = same_origin_only(page)
    page.reload()
    assert "10.0.1.10" in page.get_by_role("img", name=re.compile("top blocked sources")).inner_html()
    assert page.get_by_role("img", name=re.compile("denied packets over the last 24 h")).locator("rect").count() == 60
    shot(page, "overview-graphs")
    visit(page, "/ui/nodes", "Nodes")
    assert page.get_by_role("table", name="nodes").locator("tbody tr").count() == 2
    page.get_by_role("link", name="node2", exact=True).click()
    page.wait_for_url("**/ui/nodes/node2")
    assert page.locator("#node-state").inner_text() == "ok"
    assert "db1" in page.get_by_role("table", name="guests").inner_text()
    assert "applied" in page.get_by_role("table", name="agent log").inner_text()
    shot(page, "node")
    visit(page, "/ui/zones", "Zones")
    graph = page.get_by_role("img", name="zones and the flows between them")
    assert graph.locator("path.flow[data-from='dmz'][data-to='app']").count() == 1
    assert graph.locator("path.flow[data-from='app'][data-to='db']").count() == 1
    assert graph.locator("path.flow[data-from='dmz'][data-to='db']").count() == 0
    shot(page, "zones")
    for path in ("/docs", "/redoc"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert "/api/v1/policy" in page.locator("body").inner_text(), path  # rendered from the vendored assets
    assert foreign == [], foreign


@pytest.mark.kernel
def test_a_viewer_gets_no_editor_and_its_post_is_refused(browser: Any, managed: ManagedLab) -> None:
    created = managed.api("POST", "/tokens", json={"role": "viewer", "name": "console-viewer"})
    page = logged_in(browser, managed, created.json()["token"])
    try:
        visit(page, "/ui/edit/vms/web1", "Edit VM web1: rules")
        assert page.get_by_role("button", name="Preview the change").count() == 0
        assert "Read only" in page.locator("main").inner_text()
        visit(page, "/ui/zones", "Zones")
        assert page.get_by_role("link", name="edit rules").count() == 0
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        before = managed.api("GET", "/policy").json()["revision"]
        answer = page.request.post("/ui/edit/vms/web1", form={"csrf": csrf or "", "text": "", "action": "commit", "base_revision": str(before)}, max_redirects=0)
        assert answer.status == 403
        assert managed.api("GET", "/policy").json()["revision"] == before
    finally:
        page.context.close()


@pytest.fixture(scope="module")
def fifty_zones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveController]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.synth import policy_text

    with live_controller(tmp_path_factory.mktemp("fifty")) as live:
        import httpx

        answer = httpx.put(live.url + "/api/v1/policy", json={"documents": {"policy.yaml": policy_text(150, zones=50, nodes=4)}, "message": "50 zones"},
                           headers=live.tokens.header("admin"), timeout=300)
        assert answer.status_code == 201, answer.text[:500]
        yield live


def test_the_zone_matrix_and_picture_at_50_zones_fit_the_screen(browser: Any, fifty_zones: LiveController) -> None:
    context = browser.new_context(base_url=fifty_zones.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(120_000)
    page = context.new_page()
    try:
        page.goto("/ui/login")
        page.get_by_label("API token (admin or viewer)").fill(fifty_zones.tokens.viewer)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/ui/")
        started = time.monotonic()
        visit(page, "/ui/matrix", "Zone matrix")
        matrix = page.get_by_role("table", name="zone matrix")
        assert matrix.locator("thead th").count() == 51
        box = matrix.bounding_box()
        assert box is not None and box["width"] <= 1280 - 48 and box["height"] <= 1400, box  # before: a 6,213-pixel wall at 20 zones
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        cell = matrix.locator("td a[title]").first
        title = cell.get_attribute("title") or ""
        assert "→" in title
        shot(page, "matrix-50-zones")
        cell.click()
        page.wait_for_url(re.compile(r".*/ui/matrix\?source=.*"))
        assert page.locator("#cell").is_visible()
        visit(page, "/ui/zones", "Zones")
        graph = page.get_by_role("img", name="zones and the flows between them")
        assert graph.locator("circle.zone:not([data-zone='outside'])").count() == 50
        assert graph.bounding_box()["width"] <= 1280  # type: ignore[index]
        shot(page, "zones-50-zones")
        assert time.monotonic() - started < 120
    finally:
        context.close()
