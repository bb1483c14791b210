"""What happens after a decision: synthesis of approved shots and the reel's re-conform.

Why runs triggered by decisions, not a paused pass waiting for input (docs/REVIEW.md has the
long form): a reel's shots are decided one at a time over hours or days, by several people,
in the app or from scripts, and a retake approved next week must re-conform too. A paused
flow run would hold a worker slot (and, embedded, a process) for all that time, would lose
its place if that process died, and ends once resumed. Instead every decision writes a
`ReviewJob` row in its own transaction (the outbox, `db.review.take_decision`); the
`foley-review-apply` flow drains a reel's jobs: it synthesizes and spatializes the approved
shots (cached stages: a shot decided before is reused, not recomputed; nothing upstream of the
envelope runs at all) and, once every shot with an envelope is approved or omitted, conforms
the reel into the delivery folder the pass was given. Each run appears in the Prefect UI named
after the decisions it serves, with the queue as a markdown artifact and every waiting shot's
envelope plot as an image artifact linking to its review page.

Who runs it: `foley review approve|retake|omit` runs it in-process before returning; the review
app runs it on a background thread after each decision and, at start-up, for any job a crash
left behind (jobs are claimed under the reel's lock; a job claimed by a process that died is
taken over by the next run: claims happen under the reel's lock, which dies with its process).

When a run fails its jobs are not lost: an ordinary failure (a disk full, the store away)
puts them back in the queue, and the app's worker retries them with a growing backoff until
`db.review.RETRY_ATTEMPTS` runs failed; bad input the next run would meet again (a delivery
folder refused, an envelope that cannot be synthesized) fails them at once. A job's outcome
is its shot's: a shot that cannot be synthesized fails the jobs of its own decisions, and the
run's other jobs are done (the rest of the reel is delivered); a failure of the reel's work
(the re-conform, the folder) fails them all. Either way the reason is kept and shown (`foley
review list`, the queue page, /healthz), in one line (`describe`), and `foley review apply
REEL` runs them again once it is fixed (`retryable`, `db.review.finish_jobs`).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from db import api, review
from flows import library as library_flow
from flows.artifacts import artifact_key, md
from flows.settings import get_settings
from tasks import ingest, runtime, spatial, synth
from tasks.conform import ShotDelivery, conform, delivered
from tasks.decisions import summaries
from tasks.stage import transaction

log = logging.getLogger("foleyflow.review")


@dataclass
class ApplyReport:
    reel: str
    jobs: list[int]
    synthesized: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (shot, state)
    conformed: bool = False
    delivery_dir: str | None = None
    retry: bool = True   # whether any of the failures (`failed`, `error`) may pass by itself
    error: str | None = None  # the run failed, or was refused before it started (`drain`)
    refused: bool = False     # … refused: the delivery folder (`check_folder`)
    busy: bool = False        # not run: the reel's lock was held (`apply_decisions(wait=False)`)
    # each shot of `failed` → whether its failure may pass by itself (`retryable`): its jobs
    # are queued again, or failed
    failed_retry: dict[str, bool] = field(default_factory=dict)


def retryable(exc: BaseException) -> bool:
    """Whether a run (or one shot's work) that failed with `exc` is retried as it is, later.
    The rules, in this order, and nothing more: the exception's type decides.

    - a `DeliveryFolderError` (the delivery folder refused) — no; but its disk
      (`DeliveryDiskError`: full, over quota, read-only) — yes, as any disk full below;
    - not an `Exception` (KeyboardInterrupt, SystemExit: the run was interrupted) or an
      `OSError` — the disk full, a file or folder missing or unreadable (a sound library's
      folder too), a lock not had in time (`LockTimeout`), the store away or missing an
      artifact (`StoreError`), the database unreachable (`DatabaseUnavailable`), a shot
      decided again meanwhile (`api.NotApproved`) — yes;
    - whatever `flows.cli.service_error` says is the database's or the store's trouble (a
      connection lost under SQLAlchemy, a schema this code does not match) — yes;
    - a `ValueError`, `TypeError` or `LookupError` (KeyError, IndexError) — among them an
      envelope whose category the library has no sound of, an empty library, an unknown
      backend — no: the next run meets them again, someone has to fix them first;
    - anything else — yes: a RuntimeError, an AttributeError, an SQL error that is not an
      outage (a constraint, a trigger). A bug is therefore retried (up to
      `db.review.RETRY_ATTEMPTS` runs) when it raises one of these, and failed at once when it
      raises a ValueError, TypeError or LookupError."""
    from flows.cli import service_error
    from tasks.delivery import DeliveryDiskError, DeliveryFolderError

    if isinstance(exc, DeliveryFolderError):
        return isinstance(exc, DeliveryDiskError)  # a full disk may have room later
    if not isinstance(exc, Exception) or isinstance(exc, (OSError, api.NotApproved)):
        return True  # interrupted; the disk, a file; a shot decided again meanwhile
    if service_error(exc) is not None:
        return True
    return not isinstance(exc, (ValueError, TypeError, LookupError))


ERROR_CHARS = 500  # the longest error a job keeps and a command prints (`one_line`)


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    """`text` as one line: its lines stripped and joined with ' / ' (empty ones dropped), cut
    to `limit` characters with '…'."""
    folded = " / ".join(part for part in (ln.strip() for ln in str(text).splitlines()) if part)
    return folded if len(folded) <= limit else folded[:limit - 1].rstrip() + "…"


def describe(exc: BaseException) -> str:
    """The error a job keeps and a command prints: the exception's type and message, one line
    (`one_line`: an SQL error's statement and parameters, a multi-line message, folded)."""
    return one_line(f"{type(exc).__name__}: {exc}")


def review_link(reel: str, shot: str) -> str:
    q = urllib.parse.quote
    return f"{get_settings().review_url.rstrip('/')}/reels/{q(reel, safe='')}/shots/{q(shot, safe='')}"


@flow(name="foley-review-apply", flow_run_name="{reel}: {reason}",
      task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)
def apply_decisions(reel: str, reason: str = "decisions", wait: bool = True) -> ApplyReport:
    """Synthesize the reel's approved shots and re-conform it once every shot is settled.

    Under the reel's lock: claims every unfinished job of the reel, checks the delivery folder
    (`check_folder`: a refusal fails the jobs — no attempt counted, no retry — and raises
    DeliveryFolderError before any work; any other error of the check fails them as the work
    would, `retryable`), applies, and finishes each job by its shot's outcome (`_finish`).
    Without `wait`, a reel whose lock is held (a pass took it) is left as it is: the report
    says `busy`, nothing is claimed."""
    from tasks.delivery import DeliveryFolderError

    settings = get_settings()
    settings.configure_runtime()
    db = runtime.db()
    with db.session() as s:
        row = api.get_reel(s, reel)
        if row is None:
            raise ValueError(f"no reel {reel!r} in {db.url}: run `foley run` on its edit first")
        reel_id = row.id
    try:
        run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    except Exception:
        run_id = None
    with contextlib.ExitStack() as held:
        try:  # never beside a pass (or another apply) of the same reel
            held.enter_context(api.reel_lock(db, reel, timeout=None if wait else 0))
        except api.LockTimeout:
            if wait:
                raise
            return ApplyReport(reel=reel, jobs=[], busy=True)
        with db.session() as s:
            jobs = review.claim_jobs(s, reel_id, flow_run_id=run_id)
        refused = False
        try:
            try:  # checked holding the lock: no pass is changing the folder under the check
                check_folder(reel)
            except DeliveryFolderError as exc:
                refused = True
                with db.session() as s:
                    review.refuse_jobs(s, jobs, describe(exc))
                raise
            report = _apply(reel_id, reel, jobs)
        except BaseException as exc:  # the reel's own work failed (the delivery's disk full,
            if not refused:           # too): every job with it
                with db.session() as s:
                    review.finish_jobs(s, jobs, error=describe(exc), retry=retryable(exc))
            raise
        with db.session() as s:
            _finish(s, jobs, report)
    publish_queue(reel)
    return report


def _finish(s: Any, jobs: list[int], report: ApplyReport) -> None:
    """Finish the run's jobs by their shots: the jobs of decisions on a shot that failed
    (`report.failed`) fail with its reason — queued again if that failure may pass — and the
    others are done: their shot was synthesized (and delivered, when the reel was conformed),
    or needed no synthesis (omitted, sent back for a retake)."""
    shots = review.job_shots(s, jobs)
    why = dict(report.failed)
    review.finish_jobs(s, [j for j in jobs if shots.get(j) not in why])
    for name, reason in report.failed:
        review.finish_jobs(s, [j for j in jobs if shots.get(j) == name],
                           error=f"{name}: {reason}",
                           retry=report.failed_retry[name])


def _apply(reel_id: int, reel: str, jobs: list[int]) -> ApplyReport:
    logger = get_run_logger()

    def read(s: Any) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        row = s.get(api.Reel, reel_id)
        shots = []
        for sh in row.shots:
            if not sh.in_edit:
                continue
            env = api.latest_envelope(s, sh.id)
            shots.append({"id": sh.id, "name": sh.name, "skipped": sh.skipped_reason,
                          "state": env.state if env else None,
                          "version": env.version if env else None,
                          "proxy": (api.shot_outputs(s, "proxy", sh.id) or {}).get("proxy")})
        info = {"delivery_dir": row.delivery_dir, "params": dict(row.pass_params or {})}
        return info, shots, review.reel_settled(s, reel_id)

    info, shots, settled = transaction(read)
    params = info["params"]
    library = params.get("library") or get_settings().library
    seed = int(params.get("seed", 0))
    backend = params.get("backend", "sampler")
    report = ApplyReport(reel=reel, jobs=jobs, delivery_dir=info["delivery_dir"])
    approved = [sh for sh in shots if sh["state"] == "approved"]
    if approved:
        library_flow.ensure_library(library)
    results: dict[int, dict[str, Any]] = {}
    futures = [(sh, synth.synthesize.submit(sh["id"], library=library, seed=seed,
                                                  backend=backend))
               for sh in approved]
    spatial_futs = []
    for sh, fut in futures:
        try:
            sy = fut.result()
        except Exception as exc:  # one bad shot never sinks the reel
            report.failed.append((sh["name"], f"synth: {one_line(str(exc))}"))
            report.failed_retry[sh["name"]] = retryable(exc)
            continue
        spatial_futs.append((sh, sy, spatial.spatialize.submit(sh["id"], sy["mono"],
                                                               sy["envelope"])))
    for sh, sy, fut in spatial_futs:
        try:
            results[sh["id"]] = {"synth": sy, "spatial": fut.result()}
            report.synthesized.append(sh["name"])
        except Exception as exc:
            report.failed.append((sh["name"], f"spatial: {one_line(str(exc))}"))
            report.failed_retry[sh["name"]] = retryable(exc)
    # Whether any of the failures may pass (each shot's jobs follow their own: `_finish`).
    report.retry = any(report.failed_retry.values())
    report.waiting = [(sh["name"], sh["state"]) for sh in shots
                      if sh["state"] is not None and sh["state"] not in review.SETTLED]
    if not settled:
        logger.info("reel %s: %d shot(s) still waiting for review (%s); not conforming yet",
                    reel, len(report.waiting), ", ".join(n for n, _ in report.waiting))
        return report
    if not info["delivery_dir"]:
        logger.info("reel %s has no delivery folder (no pass delivered it); not conforming", reel)
        return report
    deliveries = []
    for sh in shots:
        res = results.get(sh["id"])
        if res is not None and sh["proxy"] is not None:
            deliveries.append(delivered(sh["id"], envelope=res["synth"]["envelope"],
                                        envelope_version=sh["version"], spatial=res["spatial"],
                                        proxy=sh["proxy"]))
        elif sh["skipped"]:
            deliveries.append(ShotDelivery(sh["id"], "skipped", reason=sh["skipped"]))
        elif sh["state"] is None:
            deliveries.append(ShotDelivery(sh["id"], "failed",
                                           reason="no envelope (the pass failed on this shot)"))
        elif sh["state"] == "approved":
            reason = dict(report.failed).get(sh["name"], "no proxy recorded")
            deliveries.append(ShotDelivery(sh["id"], "failed", reason=reason,
                                           envelope_version=sh["version"]))
        else:
            deliveries.append(ShotDelivery(sh["id"], sh["state"],
                                           envelope_version=sh["version"]))
    conform(reel_id, deliveries, info["delivery_dir"])
    report.conformed = True
    logger.info("reel %s re-conformed into %s", reel, info["delivery_dir"])
    return report


def publish_queue(reel: str) -> None:
    """Prefect UI artifacts: the reel's review queue (markdown, with links to the review app)
    and, for each shot waiting for a decision, its envelope plot as an image artifact."""
    rows = transaction(lambda s: summaries(s, review.queue(s, reel=reel)))
    key = artifact_key(reel)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    lines = [f"# Review queue: {md(reel)}", "",
             " · ".join(f"{state.replace('_', ' ')}: **{n}**" for state, n in counts.items()),
             "", "| shot | record in | state | version | lowest confidence | doubt | review |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        tc = ingest.timecode(r.record_in_frame, r.rate[0], r.rate[1], r.drop_frame)
        conf, doubt = (("–" if v is None else f"{v:.2f}") for v in (r.confidence, r.doubt))
        lines.append(f"| {md(r.shot)} | {tc} | {r.state.replace('_', ' ')} | v{r.version} | "
                     f"{conf} | {doubt} | [open]({review_link(r.reel, r.shot)}) |")
    waiting = [r for r in rows if r.state not in review.SETTLED]
    if not waiting:
        lines += ["", "Every shot is approved or omitted: the reel is conformed."]
    create_markdown_artifact("\n".join(lines), key=f"{key}-review",
                             description=f"Review queue of {reel}")
    for r in waiting:
        create_image_artifact(
            image_url=f"{review_link(r.reel, r.shot)}/plot.png?v={r.version}",
            key=f"{key}-{artifact_key(r.shot)}-envelope",
            description=f"{r.shot} v{r.version} ({r.state.replace('_', ' ')}): "
                        f"{review_link(r.reel, r.shot)}")


def drain(reel: str | None = None, *, retry_failed: bool = False,
          wait: bool = False) -> list[ApplyReport]:
    """Run `apply_decisions` for every reel with jobs due (or just `reel`): queued ones, and
    ones that failed once their backoff has passed — with `retry_failed` (a person asking,
    `foley review apply`) failed ones too, and without waiting for a backoff. A reel whose
    jobs are all claimed is applied only if its lock is free: the run that claimed them died
    (a run in progress holds the lock, and is left to finish). A reel whose lock is held — a
    pass, another apply run — is left for later unless `wait` (a person asking: the run waits
    for the lock); the app's worker does not wait, so one reel's long pass holds up no other.

    A reel that fails does not stop the others: its report carries the `error` (one line), its
    jobs say whether they are retried (`db.review.finish_jobs`). A delivery folder
    `check_folder` refuses — checked by the run, under the reel's lock — fails them before
    any work, with no attempt counted (`refused`)."""
    from flows.cli import service_error
    from tasks.delivery import DeliveryDiskError, DeliveryFolderError

    db = runtime.db()
    with db.session() as s:
        reels = review.reels_to_apply(s, retry_failed=retry_failed)
    reports = []
    for name, queued in reels.items():
        if reel is not None and name != reel:
            continue
        if (not queued or not wait) and reel_busy(name):
            continue  # being applied, or passed, right now
        try:
            report = apply_decisions(name, reason=_reason(name), wait=wait)
            if not report.busy:  # a pass took the lock since `reel_busy`: left for later
                reports.append(report)
        except Exception as exc:
            if isinstance(exc, DeliveryFolderError) and not isinstance(exc, DeliveryDiskError):
                # refused before any work; its jobs failed
                reports.append(ApplyReport(reel=name, jobs=[], error=one_line(str(exc)),
                                           retry=False, refused=True))
                continue
            # the flow run failed (a full delivery disk too); its jobs were finished with the
            # reason
            log.warning("applying the decisions of %s failed: %s", name, describe(exc),
                        extra={"in_report": True})  # a command prints the report's error
            reports.append(ApplyReport(reel=name, jobs=[], retry=retryable(exc),
                                       error=one_line(service_error(exc) or describe(exc))))
    return reports


def reel_busy(reel: str) -> bool:
    """Whether another process or thread holds the reel's lock right now (a pass, an apply)."""
    try:
        with api.reel_lock(runtime.db(), reel, timeout=0):
            return False
    except api.LockTimeout:
        return True


def check_folder(reel: str) -> None:
    """Raise `tasks.delivery.DeliveryFolderError` unless the reel's recorded delivery folder
    can take its re-conform (`check_delivery_folder`: another reel's delivery there, a file in
    its place …). `apply_decisions` runs it holding the reel's lock, after claiming the jobs
    and before any work: a pass delivering into the folder meanwhile cannot make it refuse
    what it would take. `deliver` refuses the same again."""
    from tasks.delivery import check_delivery_folder

    def read(s: Any) -> tuple[str | None, str | None]:
        row = api.get_reel(s, reel)
        return (row.delivery_dir, row.timeline_path) if row is not None else (None, None)

    out, edit = transaction(read)
    if out:
        check_delivery_folder(out, reel, edit=edit or "", option="delivery folder")


def _reason(reel: str) -> str:
    with runtime.db().session() as s:
        row = api.get_reel(s, reel)
        jobs = (review.pending_jobs(s, row.id) + review.failed_jobs(s, row.id)) if row else []
        reasons = [j.reason for j in jobs]
    if not reasons:
        return "decisions"
    return reasons[0] if len(reasons) == 1 else f"{reasons[0]} (+{len(reasons) - 1} more)"


class Applier:
    """The review app's background worker: drains the outbox whenever poked (after a
    decision) and every `interval` seconds (jobs left by a crash, or written by the CLI of a
    process that died before applying them, or of a reel whose lock was held), and sooner when
    a failed job's retry falls due."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="review-applier", daemon=True)
        self.busy = threading.Lock()
        self.last_error: str | None = None
        self.ticks = 0  # drains run so far

    def start(self) -> None:
        self.thread.start()

    def poke(self) -> None:
        self.wake.set()

    def stop(self, timeout: float = 60.0) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            with self.busy:
                self.ticks += 1
                try:
                    failed = [f"{r.reel}: {r.error}" for r in drain() if r.error]
                    self.last_error = "; ".join(failed) or None
                except Exception as exc:  # logged and retried on the next tick
                    self.last_error = describe(exc)
                    log.exception("applying review decisions failed; retrying in %.0f s",
                                  self.interval)
                wait = self._until_next()
            self.wake.wait(wait)
            self.wake.clear()

    def _until_next(self) -> float:
        """Seconds to the next tick: the interval, or sooner when a failed job's retry falls
        due (by the database's clock, which `finished_at` was written by) — but not for a reel
        whose lock is held (a long pass): a due retry there waits for the interval or a poke,
        as `drain` would leave it again."""
        try:
            with runtime.db().session() as s:
                due, now = review.retries(s), review.db_clock(s)
        except Exception:
            return self.interval
        waits = [self.interval]
        for reel, at in due.items():
            left = (at - now).total_seconds()
            if left <= 0 and reel_busy(reel):
                continue
            waits.append(max(1.0, left))
        return min(waits)

    def idle(self, timeout: float = 300.0) -> bool:
        """Wait until no job is queued or running — queued ones waiting out a retry backoff
        included (failed ones do not count) — at a moment the worker is between drains,
        poking it meanwhile; False if that did not happen within `timeout` (e.g. a retry due
        later than that, or a reel whose lock stays held). For tests and shutdown."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.busy.acquire(timeout=0.2):
                try:
                    with runtime.db().session() as s:
                        if not review.pending_jobs(s):
                            return True
                finally:
                    self.busy.release()
                self.poke()
            time.sleep(0.2)
        return False
