"""The overnight pass (`foley-nightly`): reels land during the day, the queue is full by morning.

One run scans the inbox (`flows.inbox`), and for every reel version not processed yet runs the
Foley pass into `<deliveries>/<reel>/` — review-gated by default (FOLEY_NIGHTLY_APPROVE=queue:
envelopes wait for the supervisors; auto: policy:auto approves the predictions that meet
FOLEY_NIGHTLY_APPROVE_THRESHOLD). Each version is taken once across runs and workers
(`db.inbox.claim`, in the database, so it survives restarts); an edit that cannot be read is
recorded as rejected and not retried until it changes; a pass that could not finish (a service
away) is taken again by the next run. One bad reel never sinks the night: the others still
run.

It ends with the **morning summary**: a Prefect markdown artifact (`foley-nightly-summary`) —
how many reels were passed, rejected (an edit that cannot be read), failed (taken again next
run), unchanged and still arriving; per reel passed the shots, how many are delivered
(approved), wait for review, failed or were skipped, its picture length and the time the pass
took, with links to the review app (FOLEY_REVIEW_URL); under "Needs attention" the rejected
edits and failed passes, and every shot not delivered (failed or skipped: reel, shot, record
in, status, the pass's reason; NOT_DELIVERED_PER_REEL a reel, then how many more); and the
shots whose new prediction went over a person's work (an edit, or a supervisor's decision: the
pass's `note`), which a supervisor re-reviews first — and, if FOLEY_WEBHOOK_URL is set, the same
as JSON POSTed there (a Slack / Teams / Mattermost incoming webhook reads its `text`). A webhook
that fails is logged, never fails the run. The run's log names the same shots.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from db import inbox as inbox_db
from db.engine import retry_db
from flows import foley_pass, scaleout
from flows import inbox as inboxes
from flows.artifacts import md
from flows.settings import Settings, get_settings
from tasks import runtime
from tasks.ingest import TimelineError

SUMMARY_KEY = "foley-nightly-summary"
SHOT_STATES = ("delivered", "pending_review", "retake_requested", "omitted", "failed", "skipped")
NOTES_PER_REEL = 10  # the summary lists this many shots over a person's work per reel
# Shots the pass did not deliver and no review will: the pass's own statuses (`foley_pass`):
# `failed` — a stage could not work the shot (its media cannot be decoded, …: the reason says);
# `skipped` — the edit gives it nothing to work on (media missing or without picture, a retime…)
NOT_DELIVERED = ("failed", "skipped")
NOT_DELIVERED_PER_REEL = 20  # the summary lists this many of them per reel, then how many more
REASON_CHARS = 300  # a reason longer than this is cut in the summary's text (whole in the JSON)


@dataclass
class ReelOutcome:
    """What tonight's run did with one reel version."""

    path: str
    reel: str
    status: str  # done | failed | rejected
    shots: dict[str, int] = field(default_factory=dict)  # SHOT_STATES -> count
    picture_s: float = 0.0
    seconds: float = 0.0
    delivery_dir: str | None = None
    attempt: int = 1
    error: str | None = None
    # new predictions over a person's work: {"shot", "record_in", "note"} (`ShotState.note`)
    superseded: list[dict[str, str]] = field(default_factory=list)
    # the shots not delivered (NOT_DELIVERED), in edit order: {"shot", "record_in", "status",
    # "reason"} as the reel's manifest has them
    not_delivered: list[dict[str, str]] = field(default_factory=list)


@dataclass
class NightlyReport:
    inbox: str
    started: str  # ISO 8601, local time
    seconds: float = 0.0
    reels: list[ReelOutcome] = field(default_factory=list)
    unchanged: int = 0  # versions processed before (or being processed by another run)
    settling: list[tuple[str, float]] = field(default_factory=list)
    webhook: str | None = None
    # of `unchanged`: edits rejected on an earlier night and still unreadable, (path, reason)
    still_rejected: list[tuple[str, str]] = field(default_factory=list)

    def reel_counts(self) -> dict[str, int]:
        """Tonight's reel versions by what became of them: passed, rejected, failed,
        unchanged (`still_rejected` among them) and still arriving."""
        by = {s: sum(r.status == s for r in self.reels) for s in ("done", "rejected", "failed")}
        return {"passed": by["done"], "rejected": by["rejected"], "failed": by["failed"],
                "unchanged": self.unchanged, "still_rejected": len(self.still_rejected),
                "still_arriving": len(self.settling)}

    def totals(self) -> dict[str, int]:
        out = {k: sum(r.shots.get(k, 0) for r in self.reels) for k in SHOT_STATES}
        out["shots"] = sum(sum(r.shots.values()) for r in self.reels)
        out["superseded"] = sum(len(r.superseded) for r in self.reels)
        return out

    def superseded(self, per_reel: int | None = None) -> list[dict[str, str]]:
        """The reels' new predictions over a person's work, each naming its reel: the first
        `per_reel` of each reel (all with None)."""
        return [{"reel": r.reel, **n} for r in self.reels for n in r.superseded[:per_reel]]

    def not_delivered(self, per_reel: int | None = None) -> list[dict[str, str]]:
        """The shots not delivered (failed or skipped), each naming its reel: the first
        `per_reel` of each reel (all with None)."""
        return [{"reel": r.reel, **n} for r in self.reels for n in r.not_delivered[:per_reel]]


@flow(name="foley-nightly", log_prints=True)
def nightly(inbox: str | None = None, deliveries: str | None = None, approve: str | None = None,
            envelope_estimator: str | None = None, library: str | None = None,
            fps: float | None = None, approve_threshold: float | None = None
            ) -> dict[str, Any]:
    """Scan the inbox, pass every new or changed reel, publish the morning summary. Unset
    parameters come from the settings (FOLEY_INBOX, FOLEY_DELIVERIES, FOLEY_NIGHTLY_*)."""
    settings = get_settings()
    where = inbox or settings.inbox
    if not where:
        raise ValueError("no inbox: set FOLEY_INBOX to the folder (or s3://bucket/prefix) "
                         "reels are dropped into, or pass inbox=...")
    approve = approve or settings.nightly_approve
    threshold = settings.nightly_approve_threshold if approve_threshold is None \
        else approve_threshold
    foley_pass.check_approval(approve, threshold, names=(  # before any reel is claimed
        "FOLEY_NIGHTLY_APPROVE", "FOLEY_NIGHTLY_APPROVE_THRESHOLD"))
    if (envelope_estimator or settings.nightly_envelope) == "model":
        from tasks.envelope import check_checkpoint  # once, not in every shot of every reel

        check_checkpoint(settings.envelope_checkpoint)
    retry_db(settings.configure_runtime, url=settings.resolved_db_url())
    logger = get_run_logger()
    started = time.perf_counter()
    report = NightlyReport(inbox=where, started=dt.datetime.now().astimezone().isoformat(
        timespec="seconds"))
    found = inboxes.scan(where, settle_s=settings.inbox_settle_s, home=settings.home,
                       s3=settings.s3_connection() if where.startswith("s3://") else None,
                       fps=fps)
    report.settling = found.settling
    for path, why in found.unreadable:
        _reject(settings, where, path, found.root / path, why, report)
    out_root = Path(deliveries) if deliveries else settings.resolved_deliveries()
    for arrival in found.ready:
        outcome = _process(settings, where, arrival, out_root, approve=approve,
                           threshold=threshold,
                           estimator=envelope_estimator or settings.nightly_envelope,
                           library=library)
        if outcome is None:
            report.unchanged += 1
        else:
            report.reels.append(outcome)
            _log_outcome(logger, outcome)
    report.seconds = time.perf_counter() - started
    text = summary_markdown(report, settings.review_url)
    logger.info("morning summary: %s", _night_line(report))
    create_markdown_artifact(text, key=SUMMARY_KEY, description="Morning summary of the "
                             "overnight Foley pass")
    report.webhook = notify(settings, report, text)
    return asdict(report)


def _process(settings: Settings, where: str, arrival: inboxes.Arrival, out_root: Path, *,
             approve: str, threshold: float, estimator: str, library: str | None
             ) -> ReelOutcome | None:
    """Pass one reel version unless it was processed already (None then)."""
    db = runtime.db()
    with inbox_db.claim(db, inbox=where, path=arrival.path,
                        content_sha256=arrival.content_sha256,
                        worker=settings.resolved_worker_name(),
                        flow_run_id=_flow_run_id()) as claim:
        if claim is None:
            return None
        out = out_root / arrival.reel  # safe in a file name (tasks.ingest.reel_name)
        outcome = ReelOutcome(arrival.path, arrival.reel, "done", picture_s=arrival.picture_s,
                              delivery_dir=str(out), attempt=claim.attempts)
        t0 = time.perf_counter()
        try:
            run = foley_pass.foley_pass.with_options(
                task_runner=scaleout.task_runner(settings))
            result = run(str(arrival.timeline), str(out), media_root=str(arrival.timeline.parent),
                         approve=approve, approve_threshold=threshold, library=library,
                         envelope_estimator=estimator, backend=settings.nightly_backend)
            outcome.shots = _shot_counts(result.manifest)
            outcome.superseded = [{"shot": sh.name, "record_in": sh.record_in, "note": sh.note}
                                  for sh in result.shots if sh.note]
            outcome.not_delivered = _not_delivered(result.manifest)
        except TimelineError as exc:
            outcome.status, outcome.error = "rejected", str(exc)
        except foley_pass.PassAborted as exc:  # a service is away: the rest would fail too
            outcome.status, outcome.error = "failed", str(exc)
            with contextlib.suppress(Exception):
                _finish(db, claim.id, outcome, time.perf_counter() - t0)
            raise
        except Exception as exc:  # one bad reel never sinks the night
            get_run_logger().exception("%s: the pass failed", arrival.path)
            outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
        _finish(db, claim.id, outcome, time.perf_counter() - t0)
        return outcome


def _finish(db: Any, claim_id: int, outcome: ReelOutcome, seconds: float) -> None:
    outcome.seconds = seconds
    inbox_db.finish(db, claim_id, status=outcome.status, reel=outcome.reel,
                    delivery_dir=outcome.delivery_dir, error=outcome.error,
                    summary={"shots": outcome.shots, "picture_s": outcome.picture_s,
                             "seconds": round(seconds, 3), "superseded": outcome.superseded,
                             "not_delivered": outcome.not_delivered})


def _reject(settings: Settings, where: str, path: str, local: Path, why: str,
            report: NightlyReport) -> None:
    """Record an unreadable edit once per version of its file (the hash of the edit alone)."""
    hashes = inboxes.hash_cache(settings.home)
    with inbox_db.claim(runtime.db(), inbox=where, path=path,
                        content_sha256=hashes.sha256(local),
                        worker=settings.resolved_worker_name(),
                        flow_run_id=_flow_run_id()) as claim:
        hashes.save()
        if claim is None:  # rejected on an earlier night, and still the same unreadable file
            report.unchanged += 1
            report.still_rejected.append((path, why))
            get_run_logger().warning("%s: still rejected (unchanged): %s", path, why)
            return
        outcome = ReelOutcome(path, Path(path).stem, "rejected", error=why, attempt=claim.attempts)
        _finish(runtime.db(), claim.id, outcome, 0.0)
        report.reels.append(outcome)
        _log_outcome(get_run_logger(), outcome)


def _flow_run_id() -> str | None:
    return str(flow_run.id) if flow_run.id else None


def _shot_counts(manifest: dict[str, Any]) -> dict[str, int]:
    out = {k: 0 for k in SHOT_STATES}
    for sh in manifest["shots"]:
        out[sh["status"]] = out.get(sh["status"], 0) + 1
    return out


def _not_delivered(manifest: dict[str, Any]) -> list[dict[str, str]]:
    return [{"shot": sh["name"], "record_in": sh.get("record_in") or "",
             "status": sh["status"], "reason": sh.get("skipped_reason") or ""}
            for sh in manifest["shots"] if sh["status"] in NOT_DELIVERED]


def _counts(shots: dict[str, int]) -> str:
    return ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in shots.items() if n)


def _log_outcome(logger: Any, outcome: ReelOutcome) -> None:
    """The run's log line of a reel, and one warning per shot not delivered (as capped in the
    summary)."""
    if outcome.status != "done":
        logger.warning("%s: %s: %s", outcome.path, outcome.status, outcome.error)
        return
    logger.info("%s: %s (%s)", outcome.path, outcome.status, _counts(outcome.shots))
    for n in outcome.not_delivered[:NOT_DELIVERED_PER_REEL]:
        logger.warning("%s %s %s: %s: %s", outcome.reel, n["shot"], n["record_in"], n["status"],
                       n["reason"])
    if len(outcome.not_delivered) > NOT_DELIVERED_PER_REEL:
        logger.warning("%s: and %d more shot(s) not delivered (%s/manifest.json)", outcome.reel,
                       len(outcome.not_delivered) - NOT_DELIVERED_PER_REEL, outcome.delivery_dir)


def _night_line(report: NightlyReport) -> str:
    """Tonight's reels in one line (plain text: the log's)."""
    c = report.reel_counts()
    parts = [f"{c['passed']} reel(s) passed"]
    if c["rejected"]:
        parts.append(f"{c['rejected']} rejected (the edit could not be read)")
    if c["failed"]:
        parts.append(f"{c['failed']} failed (taken again by the next run)")
    still = f" ({c['still_rejected']} of them still rejected)" if c["still_rejected"] else ""
    parts += [f"{c['unchanged']} unchanged since their last pass{still}",
              f"{c['still_arriving']} still arriving"]
    missing = len(report.not_delivered())
    if missing:
        parts.append(f"{missing} shot(s) not delivered")
    return ", ".join(parts)


def hms(seconds: float) -> str:
    """Seconds as HH:MM:SS (durations people read)."""
    s = int(round(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def summary_markdown(report: NightlyReport, review_url: str) -> str:
    """The morning summary as markdown (the Prefect artifact and the webhook's text)."""
    t = report.totals()
    c = report.reel_counts()
    base = review_url.rstrip("/")
    counts = [f"**{c['passed']}** reel(s) passed tonight"]
    if c["rejected"]:
        counts.append(f"**{c['rejected']} rejected** (the edit could not be read)")
    if c["failed"]:
        counts.append(f"**{c['failed']} failed** (the pass did not finish; taken again by the "
                      "next run)")
    still = f" ({c['still_rejected']} of them an edit still rejected)" \
        if c["still_rejected"] else ""
    counts += [f"{c['unchanged']} unchanged since their last pass{still}",
               f"{c['still_arriving']} still arriving"]
    lines = [f"# Overnight Foley pass — {report.started[:10]}", "",
             f"Inbox `{report.inbox}`: {', '.join(counts)}. "
             f"Time spent {hms(report.seconds)}."]
    ran = [r for r in report.reels if r.status != "rejected"]  # passed or failed: the pass ran
    if ran:
        over = f" ({t['superseded']} over a person's work)" if t["superseded"] else ""
        lines += ["", f"**{t['shots']}** shots: {t['delivered']} approved and delivered, "
                  f"**{t['pending_review']} waiting for review**{over}, {t['failed']} failed, "
                  f"{t['skipped']} skipped. Review queue: {base}/", "",
                  "| reel | shots | approved | pending review | failed | skipped | picture | "
                  "time | status |", "|---|---|---|---|---|---|---|---|---|"]
        for r in ran:
            s = r.shots
            link = f"[{md(r.reel)}]({base}/?reel={urllib.parse.quote(r.reel)}&status=all)"
            lines.append(
                f"| {link} | {sum(s.values())} | {s.get('delivered', 0)} | "
                f"{s.get('pending_review', 0) + s.get('retake_requested', 0)} | "
                f"{s.get('failed', 0)} | {s.get('skipped', 0)} | {hms(r.picture_s)} | "
                f"{hms(r.seconds)} | {r.status}{' (attempt %d)' % r.attempt if r.attempt > 1 else ''} |")
    lines += _attention_markdown(report)
    lines += _superseded_markdown(report, base)
    if report.settling:
        lines += ["", "## Still arriving (files changed recently; taken once they settle)", ""]
        lines += [f"- {md(path)}: ready in {hms(wait)}" for path, wait in report.settling]
    return "\n".join(lines)


def _attention_markdown(report: NightlyReport) -> list[str]:
    """The section of what no review will fix: the edits rejected (tonight, or still), the
    passes that failed, and per reel every shot not delivered — record in, shot, status and the
    pass's reason, NOT_DELIVERED_PER_REEL at most, then how many more (the reel's manifest has
    them all)."""
    problems = [r for r in report.reels if r.error]
    shots = [r for r in report.reels if r.not_delivered]
    if not (problems or shots or report.still_rejected):
        return []
    lines = ["", "## Needs attention", ""]
    for r in problems:
        again = f", attempt {r.attempt}" if r.attempt > 1 else ""
        lines.append(f"- **{md(r.path)}** ({r.status}{again}): {md(r.error)}")
    lines += [f"- **{md(path)}** (still rejected: unchanged since it was rejected): {md(why)}"
              for path, why in report.still_rejected]
    for r in shots:
        n = len(r.not_delivered)
        by = ", ".join(f"{k} {v}" for k in NOT_DELIVERED
                       if (v := sum(x["status"] == k for x in r.not_delivered)))
        lines.append(f"- **{md(r.reel)}**: {n} shot(s) not delivered ({by}) — "
                     f"{md(r.path)}")
        for x in r.not_delivered[:NOT_DELIVERED_PER_REEL]:
            reason = x["reason"] if len(x["reason"]) <= REASON_CHARS \
                else x["reason"][:REASON_CHARS - 1] + "…"
            lines.append(f"  - `{x['record_in']}` {md(x['shot'])} — {x['status']}: "
                         f"{md(reason) or 'no reason given'}")
        if n > NOT_DELIVERED_PER_REEL:
            where = f"{r.delivery_dir}/manifest.json" if r.delivery_dir else "the reel's manifest"
            lines.append(f"  - … and {n - NOT_DELIVERED_PER_REEL} more: {md(where)}")
    if shots:
        lines += ["", "*failed*: the pass could not work the shot (its media cannot be "
                  "decoded, a stage's error: the reason says); *skipped*: the edit gives it "
                  "nothing to work on (media missing or without picture, a retime, a cut "
                  "outside its media). Fix the media or the edit: the changed reel is passed "
                  "again the next night."]
    return lines


def _superseded_markdown(report: NightlyReport, base: str) -> list[str]:
    """The section of the shots to re-review first: per reel, each new prediction that went
    over a person's work (record in, shot linked to its review page, the pass's note), at most
    NOTES_PER_REEL, then how many more."""
    reels = [r for r in report.reels if r.superseded]
    if not reels:
        return []
    q = urllib.parse.quote
    lines = ["", "## Re-review: new predictions over a person's work", "",
             "Tonight's prediction went over an edit or a supervisor's decision (which stays in "
             "the shot's history); the policy never approves these shots.", ""]
    for r in reels:
        lines.append(f"- **{md(r.reel)}** ({len(r.superseded)} shot(s))")
        for n in r.superseded[:NOTES_PER_REEL]:
            link = f"{base}/reels/{q(r.reel, safe='')}/shots/{q(n['shot'], safe='')}"
            lines.append(f"  - `{n['record_in']}` [{md(n['shot'])}]({link}): "
                         f"{n['note'].removeprefix(n['shot'] + ': ')}")
        if len(r.superseded) > NOTES_PER_REEL:
            lines.append(f"  - … and {len(r.superseded) - NOTES_PER_REEL} more: "
                         f"{base}/?reel={q(r.reel)}&status=all")
    return lines


def notify(settings: Settings, report: NightlyReport, text: str) -> str | None:
    """POST the summary to FOLEY_WEBHOOK_URL (JSON: `text` plus the figures, `superseded`,
    the new predictions over a person's work, and `not_delivered`, the shots failed or
    skipped). Returns what happened, for the record; a failure is logged, never raised."""
    if not settings.webhook_url:
        return None
    payload = {"text": text, "event": "foley.nightly.summary", "inbox": report.inbox,
               "started": report.started, "seconds": round(report.seconds, 1),
               "totals": report.totals(), "unchanged": report.unchanged,
               "reel_counts": report.reel_counts(),
               # as the text lists them (a webhook caps its message: a night that re-predicts
               # every edited shot, or whose media is all missing, must not lose the summary);
               # totals and each reel count them all
               "superseded": report.superseded(NOTES_PER_REEL),
               "not_delivered": report.not_delivered(NOT_DELIVERED_PER_REEL),
               "still_rejected": [{"path": p, "error": why} for p, why in report.still_rejected],
               "reels": [{**asdict(r), "superseded": len(r.superseded),
                          "not_delivered": len(r.not_delivered)} for r in report.reels]}
    try:
        resp = httpx.post(settings.webhook_url, json=payload, timeout=settings.webhook_timeout_s)
        resp.raise_for_status()
        return f"HTTP {resp.status_code}"
    except httpx.HTTPError as exc:  # the message would name the URL, whose path is a secret
        reason = f"HTTP {exc.response.status_code}" if isinstance(
            exc, httpx.HTTPStatusError) else type(exc).__name__
        get_run_logger().warning("morning summary webhook %s failed: %s",
                                 _redacted(settings.webhook_url), reason)
        return f"failed: {reason}"


def _redacted(url: str) -> str:
    """The webhook's scheme and host only: its path usually is the secret."""
    u = urllib.parse.urlparse(url)
    return f"{u.scheme}://{u.hostname}{':%d' % u.port if u.port else ''}/…"
