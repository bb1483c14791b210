"""The review app in a real browser: Debian's Chromium, driven by Playwright, against the app
served by uvicorn on loopback, on a reel the real pass analysed.

A supervisor signs in, opens a pending shot, drags its first event later, approves; the test
then finds the decision in the database, the synthesized stem, and the re-conformed delivery
whose reel mix has the hit at its new time (and no longer at the old one). Screenshots of the
queue and shot pages are written to tests/output/ (kept by CI with the test output; the README
shows copies from docs/img/).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from db import api, review
from models.audio_env import detect_onsets
from tasks import runtime
from tests.service_pg import free_port
from tests.test_review import PASSWORD, REEL, analysed, home  # noqa: F401  (fixtures)

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parent / "output"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make test installs requirements/test.txt)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (make test installs Debian's chromium package)"
    return None


@pytest.fixture
def server(home: Path) -> Iterator[tuple[str, Any]]:  # noqa: F811
    """The review app on a free loopback port, with its decision worker running."""
    import uvicorn

    from review.app import create_app

    app = create_app()
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the review app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(60)


@pytest.fixture
def page(server: tuple[str, Any]) -> Iterator[Any]:
    why = _browser_missing()
    if why:
        pytest.fail(f"cannot run the browser test: {why}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        pg = context.new_page()
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        context.close()
        browser.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def onsets_near(path: Path, t: float, tol: float = 0.015) -> bool:
    audio, sr = sf.read(path, always_2d=True)
    return bool(np.any(np.abs(detect_onsets(audio[:, 0], sr) - t) < tol))


def test_supervisor_drags_an_event_and_approves(server: tuple[str, Any], page: Any,
                                                home: Path) -> None:  # noqa: F811
    base, app = server
    OUTPUT.mkdir(exist_ok=True)
    with runtime.db().session() as s:  # the other shot was approved earlier from the CLI
        sh2 = api.get_shot(s, REEL, "SH020")
        review.take_decision(s, sh2, version=1, decision="approved",
                             user=review.get_user(s, "anna"), via="cli")
        sh = api.get_shot(s, REEL, "SH010")
        record_in_s = sh.record_in_s

    page.goto(f"{base}/reels/{REEL}/shots/SH010")
    assert "/login" in page.url  # not signed in: sent to the sign-in page
    page.fill("input[name=username]", "anna")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/reels/**")

    page.goto(f"{base}/?status=all")
    page.wait_for_selector(".row")
    page.screenshot(path=str(OUTPUT / "review_queue.png"), full_page=True)
    page.goto(f"{base}/?status=pending_review")
    page.keyboard.press("j")
    page.keyboard.press("Enter")  # the keyboard opens the selected (only) pending shot
    page.wait_for_url(f"{base}/reels/{REEL}/shots/SH010")

    page.wait_for_selector("#plot .event")
    deadline = time.monotonic() + 30  # the page's CSP forbids string waits: poll instead
    while page.evaluate("() => document.querySelector('#picture').readyState") < 2:
        assert time.monotonic() < deadline, "the picture proxy never loaded"
        time.sleep(0.1)
    handle = page.locator("#plot .event").first
    t_before = float(handle.get_attribute("data-t"))
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y, steps=8)
    page.mouse.move(x + 80, y, steps=8)
    page.mouse.up()
    t_after = float(page.locator("#plot .event").first.get_attribute("data-t"))
    assert t_after - t_before > 0.2, (t_before, t_after)
    page.screenshot(path=str(OUTPUT / "review_shot.png"), full_page=True)

    page.click("#approve")
    expect(page.locator("#state")).to_have_attribute("data-state", "approved", timeout=60_000)
    expect(page.locator("#version")).to_have_text("v2")
    assert not [e for e in page.errors if "favicon" not in e], page.errors

    # the decision, in the database
    with runtime.db().session() as s:
        sid = api.get_shot(s, REEL, "SH010").id
        env = api.latest_envelope(s, sid)
        assert (env.version, env.state, env.source) == (2, "approved", "edit")
        assert [d.agent.name for d in env.decisions] == ["user:anna"]
    # the worker synthesizes the shot and re-conforms the reel (both shots are settled now)
    assert app.state.applier.idle(timeout=300), app.state.applier.last_error
    with runtime.db().session() as s:
        stem = api.shot_outputs(s, "synth", sid)
        assert stem is not None and not review.pending_jobs(s)
    delivery = home / "delivery"
    manifest = json.loads((delivery / "manifest.json").read_text())
    shot = next(x for x in manifest["shots"] if x["name"] == "SH010")
    assert shot["status"] == "delivered" and shot["envelope"]["version"] == 2
    delivered = json.loads((delivery / shot["envelope"]["uri"]).read_text())
    assert delivered["events"][0]["t"] == pytest.approx(t_after, abs=1e-3)
    mono = delivery / f"shots/SH010/{REEL}_SH010_foley_mono.wav"
    assert onsets_near(mono, t_after) and not onsets_near(mono, t_before)
    mix = delivery / f"{REEL}_foley_stereo.wav"
    assert onsets_near(mix, record_in_s + t_after), "the mix has no hit at the new time"
    assert not onsets_near(mix, record_in_s + t_before), "the mix still has the old hit"
