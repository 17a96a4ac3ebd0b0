"""The editor's page (issue 14), served by the real preview app: driven by clicking in headless
Chromium, results checked in the frozen edition and the sent email; CSRF, CSP and the admin token
checked over HTTP. Set DIGEST_TEST_SCREENSHOTS to keep the 375 px and 1280 px screenshots."""

import base64
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from digest import desk
from digest.cli import app
from digest.clock import FixedClock
from digest.deliver.memory import MemoryTransport
from digest.web.desk import COOKIE
from digest.web.preview import create_preview_app
from tests.browser import Page, chromium
from tests.cli_helpers import ClockedRunner
from tests.web_helpers import serve
from tests.world import World, use_in_cli

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
DAY = NOW.date().isoformat()
TOKEN = "Vq3xT9mL2pR7sK4wZ8nB5cJ1hF6gD0yA"


def desk_app(world: World, **settings: object):  # type: ignore[no-untyped-def]
    return create_preview_app(
        world.settings.model_copy(update=settings),
        world.newsletter,
        engine=world.engine,
        clock=FixedClock(NOW),
    )


def press(page: Page, selector: str) -> None:
    """Scroll `selector` into view, then click it like a person and wait for the next page."""
    page.evaluate(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
    page.click(selector)


def shoot(browser, page: Page, width: int, path: Path) -> float:  # type: ignore[no-untyped-def]
    """A full-page PNG at `width` px; the page's scroll width (it must not scroll sideways)."""
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        page.session,
        width=width,
        height=900,
        deviceScaleFactor=1,
        mobile=width < 600,
    )
    page.open(page.evaluate("location.href"))  # laid out afresh at this width
    height = page.evaluate("document.documentElement.scrollHeight")
    data = browser.call(
        "Page.captureScreenshot",
        page.session,
        format="png",
        clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        captureBeyondViewport=True,
    )["data"]
    path.write_bytes(base64.b64decode(data))
    return float(page.evaluate("document.documentElement.scrollWidth"))


def test_the_editor_works_the_draft_by_clicking_and_the_edition_and_email_show_it(
    world: World, tmp_path: Path
) -> None:
    before = desk.show(world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC)
    ev = [s for s in before.stories if s.topic == "EV industry"]
    merged = next(s for s in before.stories if s.splittable)
    dropped, pinned = ev[1], ev[-1]
    robot = next(s for s in before.stories if s.topic == "Robotics")
    with serve(desk_app(world)) as base, chromium(tmp_path) as browser:
        page = browser.page()
        page.open(f"{base}/desk")
        assert page.evaluate("location.pathname") == f"/desk/{DAY}"
        # The page shows each story's topic reason, the sources' health and the editions' counts.
        text = page.evaluate("document.body.textContent")
        assert merged.reason in text and "Autowire" in text and "Last editions" in text
        press(page, f"#story-{dropped.id} button.drop")
        assert "dropped" in page.evaluate("document.querySelector('.flash').innerText")
        press(page, f"#story-{pinned.id} button.pin")
        page.evaluate(f"document.querySelector('#story-{robot.id} select').value = 'Smartphones'")
        press(page, f"#story-{robot.id} button.move")
        press(page, f"#story-{merged.id} button.split")
        page.evaluate("document.querySelector('textarea[name=note]').value = 'From the desk: a note.'")
        press(page, "button.save-note")
        assert (
            page.evaluate("document.querySelector('textarea[name=note]').value") == "From the desk: a note."
        )
        shots = Path(tmp_path)
        widths = {w: shoot(browser, page, w, shots / f"editor-desk-{w}.png") for w in (375, 1280)}
        assert widths[375] <= 375 and widths[1280] <= 1280  # no sideways scrolling
        press(page, "button.approve")
        assert "approved and frozen" in page.evaluate("document.querySelector('.flash').innerText")
        assert page.evaluate("document.querySelectorAll('button.drop').length") == 0  # the desk is closed
        refusals = [line for line in page.console() if "Content Security Policy" in line]
        assert refusals == []
    keep = os.environ.get("DIGEST_TEST_SCREENSHOTS")
    if keep:
        for w in (375, 1280):
            shutil.copy(shots / f"editor-desk-{w}.png", Path(keep) / f"editor-desk-{w}.png")

    frozen = desk.show(world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC)
    assert frozen.frozen and frozen.approved_at == NOW and frozen.note == "From the desk: a note."
    layout = {t.name: [s.id for s in t.stories] for t in frozen.edition.topics}
    assert all(dropped.id not in ids for ids in layout.values())
    assert layout["EV industry"][0] == pinned.id
    assert robot.id in layout["Smartphones"]
    carried = {s.id: s for t in frozen.edition.topics for s in t.stories}
    assert [s.name for s in carried[merged.id].sources] == [merged.sources[0]]

    memory = MemoryTransport()
    world.send(memory)
    message = memory.sent[0]
    assert "From the desk: a note." in message.text and "From the desk: a note." in message.html
    assert dropped.title not in message.text


def test_a_post_without_the_pages_token_changes_nothing_and_pages_carry_the_csp(world: World) -> None:
    story = desk.show(
        world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC
    ).stories[0]
    with serve(desk_app(world)) as base, httpx.Client(base_url=base) as client:
        page = client.get(f"/desk/{DAY}")
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert (
            "script-src 'nonce-" in policy
            and "form-action 'self'" in policy
            and "frame-ancestors 'none'" in policy
        )
        forged = client.post(f"/desk/{DAY}", data={"action": "drop", "story": str(story.id), "csrf": "guess"})
        assert forged.status_code == 403
        bad = client.post(
            f"/desk/{DAY}", data={"action": "drop", "story": "999999", "csrf": _csrf(page.text)}
        )
        assert bad.status_code == 409 and "story 999999 is not waiting" in bad.text
        assert client.get("/desk/not-a-date").status_code == 400
        assert "The scheduler waits" not in page.text
    with serve(desk_app(world, require_approval=True, approval_deadline="09:30")) as base:
        gated = httpx.get(f"{base}/desk/{DAY}").text
        assert "The scheduler waits for it until 2026-11-25 09:30 UTC; then the edition is skipped." in gated
    after = desk.show(world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC)
    assert after.decisions == 0


def _csrf(html: str) -> str:
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_with_an_admin_token_every_page_wants_it(world: World) -> None:
    with serve(desk_app(world, admin_token=SecretStr(TOKEN))) as base, httpx.Client(base_url=base) as client:
        for path in ("/", f"/desk/{DAY}", f"/render/{DAY}.html"):
            refused = client.get(path)
            assert refused.status_code == 401 and 'action="/login"' in refused.text
        assert client.post("/login", data={"token": "wrong"}).status_code == 401
        signed = client.post("/login", data={"token": TOKEN})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert client.get(f"/desk/{DAY}").status_code == 200  # the cookie
    with serve(desk_app(world, admin_token=SecretStr(TOKEN))) as base:
        bearer = httpx.get(f"{base}/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200


def test_serving_beyond_this_machine_needs_the_token(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    use_in_cli(world, monkeypatch)
    result = ClockedRunner().invoke(app, ["preview", "--serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "without DIGEST_ADMIN_TOKEN it listens on 127.0.0.1 only" in result.output.replace("\n", " ")
