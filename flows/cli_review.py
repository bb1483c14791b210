"""`foley review …`: the approval queue from the command line, for TDs and scripts.

Same rules as the review app (both go through `db.review`): decisions only by a supervisor,
only on the latest version, each audited, each leaving a job that synthesizes the shot and
re-conforms the reel once every shot is approved or omitted — run here, before the command
returns, into the delivery folder the pass was given.
"""
from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import sys
from typing import Annotated, Any, Optional

import typer

review_app = typer.Typer(
    help="The supervisor approval queue: list, show and decide shots; serve the review app; "
    "manage its users.",
    no_args_is_help=True,
)
user_app = typer.Typer(help="People who may sign in to the review app, and their roles.",
                       no_args_is_help=True)
review_app.add_typer(user_app, name="user")

STATUS_HELP = "pending_review | approved | retake_requested | omitted | all"
# Who makes a retake's next version, and how: a rerun of the pass saves no new version of an
# unchanged prediction (docs/REVIEW.md), so the shot waits for a person's edit.
RETAKE_NEXT = ("next: an editor (or a supervisor) edits the envelope in the review app and "
               "saves it as the next version, pending review again — {link} (a rerun of the "
               "pass makes no new version unless its prediction changed)")


def _stoppable(command: Any) -> Any:
    """A decision command that runs the apply flow stops on ^C / SIGTERM as `foley run` does:
    one line, 130 / 143 (`flows.interrupt`); with --no-apply no server is involved."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flows.interrupt import STOPPED_REVIEW, stopped_by_signal

        with stopped_by_signal(STOPPED_REVIEW, server=kwargs.get("apply", True)):
            return command(*args, **kwargs)

    return wrapper


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _configure() -> None:
    from flows.cli import _prefect_defaults
    from flows.settings import get_settings

    _prefect_defaults()
    get_settings().configure_runtime()


class _RunFailures(logging.Filter):
    """Keeps the console to the command's own lines when an apply run fails: the tracebacks
    and "Finished in state Failed" lines Prefect logs for the flow run and its task runs (a
    re-conform that failed, a shot that could not be synthesized, a folder refused) stay in
    the run's log in the Prefect UI / API, and a line the command prints itself (logged with
    `extra={"in_report": True}`) is not printed twice."""

    RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "in_report", False):
            return False
        if not record.name.startswith(self.RUN_LOGGERS):
            return True
        if record.exc_info and record.exc_info[1] is not None:
            return False
        return not (record.levelno >= logging.ERROR
                    and record.getMessage().startswith("Finished in state "))


def _quiet_run_failures() -> None:
    """Install `_RunFailures` on the console handlers (once per process), after Prefect has
    set up its logging (importing it does)."""
    import prefect  # noqa: F401  (sets up Prefect's handlers, which the filter goes on)

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and \
                not isinstance(handler, logging.FileHandler) and \
                not any(isinstance(f, _RunFailures) for f in handler.filters):
            handler.addFilter(_RunFailures())


@review_app.command("list")
def review_list(
    reel: Annotated[Optional[str], typer.Option(help="Only this reel.")] = None,
    status: Annotated[str, typer.Option(help=STATUS_HELP)] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The queue: one line per shot with its record-in timecode, state, version, length, and of
    its latest version the number of events, their lowest confidence and the model's doubt
    (– when it has none). Read from the database alone (no envelope files are fetched)."""
    from db import api, review
    from tasks import ingest, runtime
    from tasks.decisions import summaries

    if status != "all" and status not in api.REVIEW_STATES:
        _fail(f"--status must be one of {STATUS_HELP}, not {status!r}")
    _configure()
    with runtime.db().session() as s:
        if reel is not None:
            _require_reel(s, reel)
        rows = summaries(s, review.queue(s, reel=reel,
                                         status=None if status == "all" else status))
        behind = review.deliveries_behind(s, reel=reel)
    _say_behind(behind)
    out = [{"reel": r.reel, "shot": r.shot,
            "record_in": ingest.timecode(r.record_in_frame, *r.rate, r.drop_frame),
            "duration_s": round(r.duration_s, 3), "state": r.state, "version": r.version,
            "since": r.since.isoformat(), "events": r.events,
            **{k: None if v is None else round(v, 3)
               for k, v in (("confidence", r.confidence), ("doubt", r.doubt))}}
           for r in rows]
    if as_json:
        typer.echo(json.dumps(out, indent=1))
        return
    if not out:
        typer.echo("nothing in the queue" + (f" with status {status}" if status != "all" else ""))

    def num(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    for r in out:
        typer.echo(f"{r['reel']}\t{r['shot']}\t{r['record_in']}\t{r['state']}\tv{r['version']}"
                   f"\t{r['duration_s']:.2f}s\t{r['events']} event{'s' * (r['events'] != 1)}"
                   f"\tconfidence {num(r['confidence'])}"
                   f"\tdoubt {num(r['doubt'])}")


@review_app.command("show")
def review_show(
    reel: Annotated[str, typer.Argument(help="Reel name.")],
    shot: Annotated[str, typer.Argument(help="Shot name, e.g. SH020.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One shot: its versions (who made each, when, an edit's note), decisions with comments,
    and events. `--json` names each version's maker and note as the review app's shot JSON
    does (`created_by`: "user:ed", or "model:" + the pass's estimator; `comment`)."""
    from db import review
    from tasks import ingest, runtime
    from tasks.decisions import load_envelope

    _configure()

    with runtime.db().session() as s:
        sh = _find_shot(s, reel, shot)
        r = sh.reel
        notes = review.edit_notes(s, r.name, sh.name)
        frame0 = r.start_frame + sh.record_in_frame
        fps = r.rate_num / r.rate_den

        def tc(t: float) -> str:
            return ingest.timecode(frame0 + int(t * fps + 1e-9), r.rate_num, r.rate_den,
                                   r.drop_frame)

        versions: list[dict[str, Any]] = []
        for env in review.versions(s, sh.id):
            doc = load_envelope(env.artifact.ref())
            versions.append({
                "version": env.version, "parent": env.parent_version, "source": env.source,
                "state": env.state, "created_by": review.version_creator(s, env),
                "created_at": env.created_at.isoformat(),
                "comment": notes.get(env.version), "prompt": doc.get("prompt"),
                "category": doc.get("category"), "doubt": doc.get("doubt"),
                "events": [{**e, "timecode": tc(e["t"])} for e in doc["events"]],
                "decisions": [{"decision": d.decision, "by": d.agent.name,
                               "at": d.created_at.isoformat(), "comment": d.comment}
                              for d in env.decisions]})
        info = {"reel": r.name, "shot": sh.name, "record_in": tc(0.0),
                "duration_s": sh.duration_s, "foley_hint": sh.foley_hint, "versions": versions}
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    typer.echo(f"{info['reel']} {info['shot']} @ {info['record_in']}  "
               f"({info['duration_s']:.2f} s){'  FOLEY: ' + info['foley_hint'] if info['foley_hint'] else ''}")
    for v in versions:
        typer.echo(f"  v{v['version']} {v['state']:<17} {v['source']:<10} by "
                   f"{'the pass' if v['created_by'].startswith('model:') else v['created_by']} at "
                   f"{v['created_at'][:19]}"
                   f"{'  (from v' + str(v['parent']) + ')' if v['parent'] else ''}")
        if v["comment"]:
            typer.echo(f"      note: {v['comment']}")
        for d in v["decisions"]:
            typer.echo(f"      {d['decision']} by {d['by']} at {d['at'][:19]}"
                       f"{': ' + d['comment'] if d['comment'] else ''}")
    latest = versions[-1] if versions else None
    if latest:
        typer.echo(f"  events of v{latest['version']} (sound: "
                   f"{latest['prompt'] or 'from the events'}"
                   f"{', category ' + latest['category'] if latest['category'] else ''}"
                   f"{', doubt %.2f' % latest['doubt'] if latest['doubt'] is not None else ''}):")
        for e in latest["events"]:
            conf = e.get("confidence")
            typer.echo(f"    {e['timecode']}  {e['kind']:<7} strength {e['strength']:.2f}"
                       f"{'  confidence %.2f' % conf if conf is not None else ''}")


def _a(word: str) -> str:
    """`word` after its indefinite article: "a viewer", "an editor"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _require_reel(s: Any, reel: str) -> None:
    """One line and exit 2, naming the reels there are, when `reel` is not in the database."""
    from db import review

    names = review.reel_names(s)
    if reel not in names:
        _fail(f"no reel {reel!r}; reels: {', '.join(names) or '(none)'}")


def _find_shot(s: Any, reel: str, shot: str) -> Any:
    """The shot, else one line and exit 2: no reel (`_require_reel`), as `review list --reel`
    says it, else no such shot in the reel."""
    from db import api

    sh = api.get_shot(s, reel, shot)
    if sh is None:
        _require_reel(s, reel)
        _fail(f"no shot {shot!r} in reel {reel!r} (see `foley review list --reel {reel}`)")
    return sh


def _decided_by(agent: str) -> str:
    """A decision's agent as people say it: "anna" for "user:anna", another as it is."""
    return agent.removeprefix("user:")


def _at(t: Any) -> str:
    """A database time (UTC; SQLite drops the zone) to the second."""
    import datetime as dt

    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).astimezone(
        dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _decide(reel: str, shot: str, decision: str, by: str, comment: str | None,
            version: int | None, apply: bool) -> None:
    from db import api, review
    from tasks import runtime
    from tasks.decisions import POLICY

    _configure()
    from flows.review import apply_decisions, review_link  # after _configure (Prefect settings)

    already = None
    try:
        with runtime.db().session() as s:
            sh = _find_shot(s, reel, shot)
            user = review.require_user(s, by, "supervisor")
            latest = api.latest_envelope(s, sh.id)
            if latest is None:
                _fail(f"{reel} {shot} has no envelope yet: run the pass on its edit first")
            made = [env.version for env in review.versions(s, sh.id)]
            if version is not None and version not in made:
                have = (f"its only version is v{made[0]}" if len(made) == 1 else
                        f"its versions are {', '.join(f'v{n}' for n in made)}")
                _fail(f"{reel} {shot} has no v{version}: {have} (decide the latest, "
                      f"v{latest.version})")
            decided = latest.version if version is None else version
            # The same settled decision again on the version it stands on, taken by a person:
            # deciding it twice would record a second decision and job, and run the apply
            # again, for nothing. Over the policy's (`--approve auto`) it is recorded: a
            # supervisor's decision makes the shot a person's work (`decisions.held_by`).
            last = latest.decisions[-1] if latest.decisions else None
            if decided == latest.version and latest.state == decision and \
                    decision in review.SETTLED and last is not None and \
                    last.agent.name != POLICY:
                already = (f"{reel} {shot} v{decided} is already {decision} (by "
                           f"{_decided_by(last.agent.name)}, {_at(last.created_at)}); "
                           "nothing was written")
                behind = review.deliveries_behind(s, reel=reel)
            else:
                _d, job = review.take_decision(
                    s, sh, version=decided, decision=decision, user=user, comment=comment,
                    expect_state=None if version is not None else latest.state,
                    client=f"cli:{getpass.getuser()}", via="cli")
    except review.StaleReview as exc:
        _fail(str(exc), 2)
    except review.ReviewError as exc:
        _fail(str(exc), 2)
    if already is not None:
        typer.echo(already)
        _say_behind(behind, every=True)  # e.g. decided with --no-apply: not applied yet
        return
    typer.echo(f"{reel} {shot} v{decided}: {decision.replace('_', ' ')} by {by}")
    if decision == "retake_requested":
        typer.echo(RETAKE_NEXT.format(link=review_link(reel, shot)))
    if not apply:
        typer.echo("synthesis and re-conform are queued (job left for the review app or "
                   "`foley review apply`)")
        return
    _quiet_run_failures()
    try:
        report = apply_decisions(reel, reason=f"{shot} v{decided} {decision} by {by}")
    except Exception as exc:  # the decision stands: deciding again would record it twice
        from flows.cli import service_error
        from flows.review import describe, one_line
        from tasks.delivery import DeliveryFolderError

        if isinstance(exc, DeliveryFolderError):  # the run failed the jobs, with the reason
            _fail(f"{one_line(str(exc))} — the decision is recorded: do not decide again; "
                  f"once the folder is sorted out, `foley review apply {reel}` synthesizes "
                  "and re-conforms", exc.exit_code)
        said = service_error(exc)
        if said is None and not isinstance(exc, OSError):
            raise
        _fail(f"{one_line(said or describe(exc))} — but the decision is recorded: do not "
              f"decide again; once that is sorted out, `foley review apply {reel}` "
              "synthesizes and re-conforms (so does the review app's worker)", 1)
    _print_apply(report)


def _say_behind(behind: list[Any], *, every: bool = False) -> None:
    """One line on standard error per reel whose delivery is behind its decisions because
    applying them failed (`every`: also those merely waiting for a run)."""
    for b in behind:
        if every or b.status in ("retrying", "failed"):
            typer.secho(b.message(), fg=typer.colors.RED if b.status == "failed"
                        else typer.colors.YELLOW, err=True)


def _print_apply(report: Any, *, exit: bool = True) -> bool:
    """Print what an apply run did; True if something failed (exit 1 unless `exit` False)."""
    if report.error:
        typer.secho(f"error: {report.reel}: {report.error}", fg=typer.colors.RED, err=True)
        return True
    if report.synthesized:
        typer.echo(f"synthesized: {', '.join(report.synthesized)}")
    for name, why in report.failed:
        typer.secho(f"  {name}: {why}", fg=typer.colors.RED, err=True)
    if report.conformed:
        typer.echo(f"re-conformed {report.reel} into {report.delivery_dir}")
    elif report.waiting:
        typer.echo(f"waiting for review: {', '.join(f'{n} ({s})' for n, s in report.waiting)}")
    if report.failed and exit:
        _say_jobs(report.reel)
        raise typer.Exit(1)
    return bool(report.failed)


def _say_jobs(reel: str) -> None:
    """What became of the reel's decisions after a failed run (retried, or failed for good)."""
    from db import review
    from tasks import runtime

    with runtime.db().session() as s:
        _say_behind(review.deliveries_behind(s, reel=reel))


BY = Annotated[str, typer.Option("--by", help="The supervisor deciding (a review app user).")]
COMMENT = Annotated[Optional[str], typer.Option("--comment", "-m", help="Why; shown in the "
                                                "shot's history.")]
VERSION = Annotated[Optional[int], typer.Option("--version", help="Decide this version (must "
                                                "be the latest; default: the latest as it is now).")]
APPLY = Annotated[bool, typer.Option("--apply/--no-apply", help="Synthesize and re-conform now "
                                     "(default), or leave it to the review app's worker.")]


@review_app.command("approve")
@_stoppable
def review_approve(reel: Annotated[str, typer.Argument(help="Reel name.")],
                   shot: Annotated[str, typer.Argument(help="Shot name.")], by: BY,
                   comment: COMMENT = None, version: VERSION = None, apply: APPLY = True) -> None:
    """Approve the shot's latest envelope: it is synthesized, and the reel re-conformed once
    every shot is approved or omitted."""
    _decide(reel, shot, "approved", by, comment, version, apply)


@review_app.command("retake")
@_stoppable
def review_retake(reel: Annotated[str, typer.Argument(help="Reel name.")],
                  shot: Annotated[str, typer.Argument(help="Shot name.")], by: BY,
                  comment: COMMENT = None, version: VERSION = None, apply: APPLY = True) -> None:
    """Send the shot's envelope back for another take (a comment saying what to change is
    required). The next version is made by an editor (or a supervisor) in the review app
    (`foley review serve`): they edit the envelope on the shot's page and save it, and it is
    pending review again. A rerun of the pass makes none unless its prediction changed
    (another estimator or checkpoint, the shot recut): the shot stays retake_requested until
    someone saves an edit."""
    _decide(reel, shot, "retake_requested", by, comment, version, apply)


@review_app.command("omit")
@_stoppable
def review_omit(reel: Annotated[str, typer.Argument(help="Reel name.")],
                shot: Annotated[str, typer.Argument(help="Shot name.")], by: BY,
                comment: COMMENT = None, version: VERSION = None, apply: APPLY = True) -> None:
    """Leave the shot without Foley in the delivery (it no longer holds the reel back)."""
    _decide(reel, shot, "omitted", by, comment, version, apply)


@review_app.command("apply")
@_stoppable
def review_apply(reel: Annotated[Optional[str], typer.Argument(help="Only this reel.")] = None
                 ) -> None:
    """Run the synthesis / re-conform that decisions left queued (after a crash, or decisions
    taken with --no-apply), and again what failed (a disk full, a delivery folder refused …:
    fix it first), without waiting for the review app's next retry (a reel a pass holds is
    waited for). Exit 1 if a reel's run failed (2 if its delivery folder was refused), each
    said in one line, without Prefect's traceback of the failed run (it stays in the run's log
    in the Prefect UI). An unknown reel is one line and exit 2."""
    _configure()
    from flows.review import drain

    if reel is not None:
        from tasks import runtime

        with runtime.db().session() as s:
            _require_reel(s, reel)
    _quiet_run_failures()
    reports = drain(reel, retry_failed=True, wait=True)
    if not reports:
        typer.echo("no decisions waiting to be applied")
    failed = False
    for report in reports:
        failed = _print_apply(report, exit=False) or failed
    if failed:
        from db import review
        from tasks import runtime

        with runtime.db().session() as s:
            for report in reports:
                _say_behind(review.deliveries_behind(s, reel=report.reel))
        raise typer.Exit(2 if any(r.refused for r in reports) else 1)


@review_app.command("serve")
def review_serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for the team, "
                                      "behind an https proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
) -> None:
    """Run the review app (queue page, shot pages with the envelope editor). People sign in
    with accounts made by `foley review user add`. Set FOLEY_REVIEW_URL to the address people
    use, so links from the Prefect UI reach it. A port outside 1–65535, or one that cannot be
    listened on (in use), is one line and exit 2, before anything is started."""
    import uvicorn

    from flows.settings import get_settings
    from review.app import create_app

    if not 1 <= port <= 65535:
        _fail(f"--port {port}: a TCP port is 1–65535")
    sock = _listen(host, port)
    _configure()
    from db import review
    from tasks import runtime

    with runtime.db().session() as s:
        if not review.list_users(s):
            typer.secho("note: no users yet — add one with `foley review user add NAME --role "
                        "supervisor`", fg=typer.colors.YELLOW, err=True)
    # Unless the studio set where people reach the app, links point where it listens.
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    os.environ.setdefault("FOLEY_REVIEW_URL", f"http://{shown}:{port}")
    typer.echo(f"review app on http://{host}:{port} (Ctrl+C stops it); people reach it at "
               f"{get_settings().review_url}", err=True)
    from flows.interrupt import start_server_here

    # Without a Prefect server (PREFECT_API_URL), the ephemeral one the apply worker's flows
    # use is started here, on the main thread: apart from the terminal's Ctrl-C, and gone
    # with this process however it ends (it was left running after a kill -9).
    start_server_here()
    server = uvicorn.Server(uvicorn.Config(create_app(), host=host, port=port,
                                           log_level="warning"))
    server.run(sockets=[sock])  # the socket bound above: no other process takes the port
    if not server.started:  # the app's start-up failed (uvicorn said why)
        raise typer.Exit(1)


def _listen(host: str, port: int) -> Any:
    """A socket bound to `host`:`port`, as uvicorn binds one (SO_REUSEADDR; IPv6 when the
    host has a ':'), for the app to serve on — else one line and exit 2. Checked before the
    banner: uvicorn alone would print it, then its own error, and exit 3."""
    import errno
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            _fail(f"port {port} is in use on {host}: {why} (try --port, or stop what listens "
                  "there)")
        _fail(f"cannot listen on {host} port {port}: {why}")
    sock.set_inheritable(True)
    return sock


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . - _).")],
    role: Annotated[str, typer.Option(help="viewer | editor | supervisor")] = "viewer",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password "
                                                 "from standard input (scripts).")] = False,
) -> None:
    """Add a person who may sign in (asks for the password twice unless --password-stdin).
    The name and role are checked first, so no one types a password for a user refused."""
    from db import review
    from review import auth
    from tasks import runtime

    _configure()
    try:
        with runtime.db().session() as s:
            review.check_new_user(s, name, role)
    except review.ReviewError as exc:
        _fail(str(exc))
    password = _read_password(password_stdin)
    try:
        with runtime.db().session() as s:
            review.create_user(s, name, role, auth.hash_password(password))
            review.audit(s, f"cli:{getpass.getuser()}", "user:add", name=name, role=role)
    except (review.ReviewError, auth.WeakPassword) as exc:
        _fail(str(exc))
    typer.echo(f"user {name} added as {role}")


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="User name.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password "
                                                 "from standard input (scripts).")] = False,
) -> None:
    """Set a user's password (signs them out everywhere; asks for it twice unless
    --password-stdin). An unknown user is said before the password is asked for."""
    from db import review
    from review import auth
    from tasks import runtime

    _configure()
    with runtime.db().session() as s:
        if review.get_user(s, name) is None:
            _fail(f"no user {name!r}")
    password = _read_password(password_stdin)
    try:
        with runtime.db().session() as s:
            review.set_password(s, name, auth.hash_password(password))
            review.audit(s, f"cli:{getpass.getuser()}", "user:passwd", name=name)
    except (review.ReviewError, auth.WeakPassword) as exc:
        _fail(str(exc))
    typer.echo(f"password of {name} changed")


@user_app.command("role")
def user_role(name: Annotated[str, typer.Argument(help="User name.")],
              role: Annotated[str, typer.Argument(help="viewer | editor | supervisor")]) -> None:
    """Change a user's role."""
    from db import review
    from tasks import runtime

    _configure()
    try:
        with runtime.db().session() as s:
            review.set_role(s, name, role)
            review.audit(s, f"cli:{getpass.getuser()}", "user:role", name=name, role=role)
    except review.ReviewError as exc:
        _fail(str(exc))
    typer.echo(f"{name} is now {_a(role)}")


@user_app.command("list")
def user_list() -> None:
    """Users and their roles."""
    from db import review
    from tasks import runtime

    _configure()
    with runtime.db().session() as s:
        for u in review.list_users(s):
            typer.echo(f"{u.name}\t{u.role}\t{'active' if u.active else 'disabled'}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        _fail("the passwords differ")
    return first
