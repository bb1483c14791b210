"""The morning summary tells the night as it was: reels passed, rejected, unchanged and still
arriving counted apart, and every shot the pass did not deliver named under "Needs attention"
(reel, shot, record in, the pass's status and reason) — in the artifact, the webhook and the
run's result alike.

A real inbox: a reel (named with an accent and markdown's brackets) one of whose media files
is garbage, an edit that cannot be read, and a reel still being copied; the nightly flow runs
against the session's Prefect server (`prefect_harness`), real ffmpeg, SQLite and artifact
folder, the webhook a real HTTP server on loopback (tests/test_nightly.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flows.demo import make_demo_reel
from tests.test_nightly import SHOTS, age, webhook  # noqa: F401 (fixture)

REEL = "scène 2 [alt]"  # markdown reads the brackets as a link's text unless escaped


@pytest.fixture(scope="module")
def bad_reel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-shot reel whose second shot's media file is garbage (a failed render, say)."""
    folder = tmp_path_factory.mktemp("summary-reels") / "bad"
    make_demo_reel(folder, name=REEL, shots=SHOTS)
    (folder / "media" / SHOTS[1].media).write_bytes(b"\0" * 5000)
    return folder


def test_the_summary_counts_reels_apart_and_names_every_shot_not_delivered(
        bad_reel: Path, tmp_path: Path, foley_home: Path, prefect_harness: None,
        webhook: tuple[str, list[dict[str, Any]]],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    from flows.nightly import SUMMARY_KEY, nightly

    box = tmp_path / "inbox"
    shutil.copytree(bad_reel, box / "bad")
    (box / "broken").mkdir()
    (box / "broken" / "broken.otio").write_text("{ not an edit")
    age(box, 3600)
    shutil.copytree(bad_reel, box / "copying")  # landed just now: still arriving
    url, received = webhook
    monkeypatch.setenv("FOLEY_INBOX", str(box))
    monkeypatch.setenv("FOLEY_INBOX_SETTLE_S", "600")
    monkeypatch.setenv("FOLEY_DELIVERIES", str(tmp_path / "deliveries"))
    monkeypatch.setenv("FOLEY_WEBHOOK_URL", url)
    monkeypatch.setenv("FOLEY_REVIEW_URL", "https://review.example")

    night = nightly()
    assert [(r["path"], r["status"]) for r in night["reels"]] == [
        ("broken/broken.otio", "rejected"), (f"bad/{REEL}.otio", "done")]
    manifest = json.loads((tmp_path / "deliveries" / REEL / "manifest.json").read_text())
    good, bad = manifest["shots"]
    # the status the pass gives a shot whose media cannot be read, and its reason
    assert (good["status"], bad["status"]) == ("pending_review", "failed")
    assert "not readable media" in bad["skipped_reason"]

    with get_client(sync_client=True) as client:
        [art] = [a for a in client.read_latest_artifacts(limit=50) if a.key == SUMMARY_KEY]
    text = art.data
    [hook] = received
    assert hook["text"] == text
    # one reel passed, one edit rejected: not "2 reel(s) passed"
    assert "**1** reel(s) passed tonight, **1 rejected** (the edit could not be read), " \
        "0 unchanged since their last pass, 1 still arriving." in text, text
    assert hook["reel_counts"] == {"passed": 1, "rejected": 1, "failed": 0, "unchanged": 0,
                                   "still_rejected": 0, "still_arriving": 1}
    # the rejected edit is not a row of reels passed
    assert "| [broken]" not in text
    # the shot not delivered: its reel (escaped), record in, name, the pass's status and reason
    attention = text[text.index("## Needs attention"):]
    assert "- **broken/broken.otio** (rejected): " in attention
    assert r"- **scène 2 \[alt\]**: 1 shot(s) not delivered (failed 1) — " \
        r"bad/scène 2 \[alt\].otio" in attention, attention
    [line] = [x for x in attention.splitlines() if x.startswith("  - `")]
    assert line.startswith(f"  - `{bad['record_in']}` {bad['name']} — failed: proxy: ")
    assert "not readable media" in line
    assert "*failed*: the pass could not work the shot (its media cannot be decoded" in attention
    [shot] = hook["not_delivered"]
    assert shot == {"reel": REEL, "shot": bad["name"], "record_in": bad["record_in"],
                    "status": "failed", "reason": bad["skipped_reason"]}
    [reel] = [r for r in night["reels"] if r["status"] == "done"]
    assert reel["not_delivered"] == [{k: v for k, v in shot.items() if k != "reel"}]

    # the next night: nothing changed; the edit still cannot be read and is said so again
    again = nightly()
    assert again["reels"] == [] and again["unchanged"] == 2
    text2 = received[1]["text"]
    assert "**0** reel(s) passed tonight, 2 unchanged since their last pass (1 of them an " \
        "edit still rejected), 1 still arriving." in text2, text2
    assert "- **broken/broken.otio** (still rejected: unchanged since it was rejected): " \
        in text2[text2.index("## Needs attention"):]
    assert received[1]["still_rejected"][0]["path"] == "broken/broken.otio"


def test_a_huge_night_lists_the_first_shots_of_each_reel_then_how_many_more(
        webhook: tuple[str, list[dict[str, Any]]],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reel whose media all went missing: the first NOT_DELIVERED_PER_REEL shots listed
    (names and reasons escaped, a long reason cut), then how many more and where they all
    are; the webhook lists what the text lists and counts them all."""
    from flows.nightly import (NOT_DELIVERED_PER_REEL, REASON_CHARS, NightlyReport, ReelOutcome,
                               notify, summary_markdown)
    from flows.settings import get_settings

    many = NOT_DELIVERED_PER_REEL + 25
    lost = [{"shot": f"SH{i:03d}0|*", "record_in": f"01:00:{i:02d}:00", "status": "skipped",
             "reason": f"media not found: A{i:03d}_C001.mov " + "x" * (REASON_CHARS + 50)}
            for i in range(1, many + 1)]
    report = NightlyReport(inbox="/in", started="2026-11-22T01:00:00+00:00", reels=[
        ReelOutcome("r1/r1.otio", "r1", "done", shots={"skipped": many},
                    delivery_dir="/deliveries/r1", not_delivered=lost),
        ReelOutcome("r2/r2.otio", "r2", "done", shots={"pending_review": 3, "failed": 1},
                    not_delivered=[{"shot": "SH020", "record_in": "02:00:01:00",
                                    "status": "failed", "reason": "proxy: not readable media"}]),
        ReelOutcome("r3/r3.otio", "r3", "done", shots={"pending_review": 2})])
    text = summary_markdown(report, "https://review.example/")
    attention = text[text.index("## Needs attention"):].splitlines()
    assert f"- **r1**: {many} shot(s) not delivered (skipped {many}) — r1/r1.otio" in attention
    listed = [x for x in attention if x.startswith("  - `01:00:")]
    assert len(listed) == NOT_DELIVERED_PER_REEL
    assert listed[0].startswith(r"  - `01:00:01:00` SH0010\|\* — skipped: media not found: "
                                "A001_C001.mov xxx")
    assert listed[0].endswith("x…") and len(listed[0]) < REASON_CHARS + 60
    assert "  - … and 25 more: /deliveries/r1/manifest.json" in attention
    assert "- **r2**: 1 shot(s) not delivered (failed 1) — r2/r2.otio" in attention
    assert "  - `02:00:01:00` SH020 — failed: proxy: not readable media" in attention
    assert not any("r3" in x for x in attention)

    url, received = webhook
    monkeypatch.setenv("FOLEY_WEBHOOK_URL", url)
    assert notify(get_settings(), report, text) == "HTTP 204"
    [hook] = received
    assert len(hook["not_delivered"]) == NOT_DELIVERED_PER_REEL + 1
    assert hook["not_delivered"][-1]["reel"] == "r2"
    assert [r["not_delivered"] for r in hook["reels"]] == [many, 1, 0]
    assert hook["totals"]["skipped"] == many and hook["totals"]["failed"] == 1
