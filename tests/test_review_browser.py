"""The review app in a real browser: Debian's Chromium, driven by Playwright, against the app
served by uvicorn on loopback, on a reel the real pass analysed.

A supervisor signs in, opens a pending shot, drags its first event later, approves; the test
then finds the decision in the database, the synthesized stem, and the re-conformed delivery
whose reel mix has the hit at its new time (and no longer at the old one). Another draws the
curve with Shift+drag on its dBFS axis and reads the saved versions back through the JSON API.
Screenshots of the queue and shot pages (and of the plot after the dB strokes) are written to
tests/output/ (kept by CI with the test output; the README shows copies from docs/img/); with
FOLEY_SCREENSHOT_DIR set, the plot's is also written there as shot_db.png.
"""
from __future__ import annotations

import json
import os
import re
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


# ---------------------------------------------------------------- the curve on its dB axis

CURVE_FLOOR_DB = -72.0  # shot.js: the bottom of the plot is silence


def sign_in(page: Any, base: str, url: str) -> None:
    """Open `url` as anna (a supervisor), through the sign-in page it redirects to."""
    page.goto(f"{base}{url}")
    page.fill("input[name=username]", "anna")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{url}")


def plot_geometry(page: Any) -> dict[str, Any]:
    """Where the plot is on the page, in client pixels: the plot area (its background
    rectangle), and each axis label with the y of its grid line (left) or its own y (right)."""
    return page.evaluate("""() => {
        const svg = document.getElementById('plot');
        const ctm = svg.getScreenCTM();
        const at = (x, y) => { const p = svg.createSVGPoint(); p.x = x; p.y = y;
                               const q = p.matrixTransform(ctm); return [q.x, q.y]; };
        const text = (t) => t.firstChild ? t.firstChild.nodeValue : '';  // not its <title>
        const bg = svg.querySelector('.plot-bg').getBoundingClientRect();
        const left = [...svg.querySelectorAll('text.y-label:not(.strength-label)')].map(t => {
            const line = t.previousElementSibling;  // each label follows its grid line
            return {text: text(t), x: t.getBoundingClientRect().right,
                    y: at(0, Number(line.getAttribute('y1')))[1]};
        });
        const right = [...svg.querySelectorAll('text.strength-label')].map(t => {
            const r = t.getBoundingClientRect();
            return {text: text(t), x: r.left, y: r.top + r.height / 2};
        });
        return {left: bg.left, top: bg.top, width: bg.width, height: bg.height,
                dbLabels: left, strengthLabels: right};
    }""")


def clear_of_events(page: Any, x: float, y: float) -> float:
    """x, moved right until the pointer there would not land on an event's handle (a press
    on a handle drags the event instead of drawing)."""
    for _ in range(40):
        on_event = page.evaluate(
            "([x, y]) => [-8, 0, 8].some(d => { const e = document.elementFromPoint(x + d, y);"
            " return !!(e && e.closest && e.closest('circle.event')); })", [x, y])
        if not on_event:
            return x
        x += 6
    raise AssertionError(f"no place clear of events near x={x}, y={y}")


def shift_stroke(page: Any, points: list[tuple[float, float]], steps: int) -> None:
    """Shift+drag through `points` (client pixels), `steps` pointer moves per segment."""
    page.keyboard.down("Shift")
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()
    page.keyboard.up("Shift")


def test_supervisor_draws_the_curve_in_db(server: tuple[str, Any], page: Any,
                                          home: Path) -> None:  # noqa: F811
    """The envelope editor's curve axis is dBFS (0 dB at the top, -72 dB = silence at the
    bottom): a Shift+drag along the -24 dB grid line saves samples of 10^(-24/20) RMS, a
    stroke between two pointer samples is a straight line in dB, and a stroke along the
    bottom edge saves silence (0); the samples the strokes did not cross are unchanged."""
    base, _ = server
    shot_url = f"/reels/{REEL}/shots/SH010"
    api_url = f"{base}/api/reels/{REEL}/shots/SH010"
    sign_in(page, base, shot_url)
    page.wait_for_selector("#plot .event")
    page.wait_for_selector("#plot path.curve")
    expect(page.locator("#version")).to_have_text("v1")

    def version(v: int) -> dict[str, Any]:
        resp = page.request.get(f"{api_url}/versions/{v}")  # the page's session cookie
        assert resp.ok, (resp.status, resp.text())
        return resp.json()

    v1 = version(1)
    hz, dur = v1["rate_hz"], v1["duration_s"]
    n = len(v1["curve"])
    assert n == round(dur * hz) and n > 100

    # 1. the axes: dBFS on the left, from 0 dB at the top to -72 dB at the bottom, evenly
    #    spaced (a dB axis, not a linear one); the events' strength 0..1 on the right
    g = plot_geometry(page)
    left = [lab["text"] for lab in g["dbLabels"]]
    assert left == ["0 dB", "-12", "-24", "-36", "-48", "-60", "-72"], left
    ys = {int(lab["text"].split()[0]): lab["y"] for lab in g["dbLabels"]}
    top, height = g["top"], g["height"]
    for db, y in ys.items():
        assert y == pytest.approx(top + db / CURVE_FLOOR_DB * height, abs=0.6), (db, y, g)
    assert all(lab["x"] <= g["left"] for lab in g["dbLabels"])
    strength = sorted(g["strengthLabels"], key=lambda lab: -lab["y"])  # bottom to top
    assert [lab["text"] for lab in strength] == ["0", ".5", "1"], g["strengthLabels"]
    assert all(lab["x"] >= g["left"] + g["width"] for lab in strength)

    def x_of(t: float) -> float:
        return float(round(g["left"] + t / dur * g["width"]))

    def index_of(x: float) -> int:  # the sample a pointer at client x writes (shot.js drawTo)
        return int(round((x - g["left"]) / g["width"] * dur * hz))

    # the hover text reads the level under the pointer in dB
    y24 = float(round(ys[-24]))
    page.mouse.move(x_of(0.5 * dur), y24)
    hover = page.locator("#plot .hover-text").text_content() or ""
    m = re.search(r"(-?\d+(?:\.\d+)?) dB", hover)
    assert m and float(m.group(1)) == pytest.approx(-24, abs=0.5), hover
    # ... and the strength a double-click there gives an event (the right scale): 1 - 24/72
    st = re.search(r"strength (\d\.\d+)", hover)
    assert st and float(st.group(1)) == pytest.approx(1 - 24 / 72, abs=0.02), hover

    # 2. Shift+drag along the -24 dB line over a stretch where the baseline's curve is much
    #    quieter (around -30 to -60 dB), then Ctrl+S
    xa0 = clear_of_events(page, x_of(0.12 * dur), y24)
    xa1 = x_of(0.3 * dur)
    i0, i1 = index_of(xa0), index_of(xa1)
    assert i1 - i0 > 0.1 * n
    before = np.array(v1["curve"][i0 + 1:i1])
    assert np.all(np.abs(20 * np.log10(np.maximum(before, 1e-9)) + 24) > 3), before  # a change
    shift_stroke(page, [(xa0, y24), (xa1, y24)], steps=25)
    expect(page.locator("#dirty")).to_have_attribute("data-dirty", "true")
    page.keyboard.press("Control+s")
    expect(page.locator("#version")).to_have_text("v2", timeout=30_000)
    expect(page.locator("#dirty")).to_have_attribute("data-dirty", "false")
    v2 = version(2)
    assert (v2["version"], v2["parent"], v2["source"]) == (2, 1, "edit")
    assert v2["events"] == v1["events"]
    drawn = np.array(v2["curve"][i0 + 1:i1])  # one sample of slack for the pointer's rounding
    assert np.all(drawn > 0), drawn
    assert np.max(np.abs(20 * np.log10(drawn) + 24)) <= 1.5, (
        f"the stroke at -24 dB saved {drawn.min():.4f}..{drawn.max():.4f} RMS, "
        f"not 10^(-24/20) = {10 ** (-24 / 20):.4f}")
    outside = [i for i in range(n) if i < i0 - 1 or i > i1 + 1]
    assert [v2["curve"][i] for i in outside] == [v1["curve"][i] for i in outside]

    # 3. a stroke along the bottom edge, over a stretch that is not silent yet: silence (0);
    #    and a stroke with only two pointer samples, from -12 dB down to -48 dB: the samples
    #    between them lie on a straight line in dB (in linear RMS its middle would be -18 dB).
    #    Saved with the Save button.
    y12, y48, y72 = float(round(ys[-12])), float(round(ys[-48])), float(round(ys[-72]))
    xc0 = clear_of_events(page, x_of(0.33 * dur), y72)
    xc1 = x_of(0.45 * dur)
    k0, k1 = index_of(xc0), index_of(xc1)
    assert i1 + 1 < k0 - 1 and k1 - k0 > 0.05 * n
    assert all(v > 0 for v in v2["curve"][k0 + 1:k1]), v2["curve"][k0 + 1:k1]  # not silent yet
    shift_stroke(page, [(xc0, y72), (xc1, y72)], steps=25)
    xb0 = clear_of_events(page, x_of(0.5 * dur), y12)
    xb1 = x_of(0.75 * dur)
    j0, j1 = index_of(xb0), index_of(xb1)
    assert k1 + 1 < j0 - 1
    shift_stroke(page, [(xb0, y12), (xb1, y48)], steps=1)
    # the plot after the edit, for a person to look at
    OUTPUT.mkdir(exist_ok=True)
    png = page.locator("#plot").screenshot(path=str(OUTPUT / "review_shot_db.png"))
    if os.environ.get("FOLEY_SCREENSHOT_DIR"):
        out = Path(os.environ["FOLEY_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "shot_db.png").write_bytes(png)
    page.click("#save")
    expect(page.locator("#version")).to_have_text("v3", timeout=30_000)
    v3 = version(3)
    assert v3["parent"] == 2
    assert v3["curve"][k0 + 1:k1] == [0.0] * (k1 - k0 - 1), v3["curve"][k0 + 1:k1]
    ramp = np.array(v3["curve"][j0 + 1:j1])
    assert np.all(ramp > 0), ramp
    want = -12 + (-48 + 12) * (np.arange(j0 + 1, j1) - j0) / (j1 - j0)
    assert np.max(np.abs(20 * np.log10(ramp) - want)) <= 1.5, (
        "between two pointer samples the curve is not a straight line in dB: "
        f"{np.round(20 * np.log10(ramp), 1).tolist()}")
    outside = [i for i in range(n) if not (k0 - 1 <= i <= k1 + 1 or j0 - 1 <= i <= j1 + 1)]
    assert [v3["curve"][i] for i in outside] == [v2["curve"][i] for i in outside]
    assert not [e for e in page.errors if "favicon" not in e], page.errors
