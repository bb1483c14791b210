"""The supervisor approval queue as a web app (`foley review serve`). Contract: docs/REVIEW_API.md.

Everything the app changes goes through `db.review` (decisions, optimistic locking, audit,
the outbox) and `tasks.decisions.save_version` (edits as new versions): the same rules as the
`foley review` command line. After a decision the app's background `Applier` runs the
`foley-review-apply` flow, which synthesizes the approved shots and re-conforms the reel.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import json
import logging
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from db import api, review
from flows.review import Applier
from flows.settings import Settings, get_settings
from review import auth
from tasks import ingest, plots, runtime, synth
from tasks.decisions import (load_envelope, position_of, save_version, summaries,
                             validate_envelope)
from tasks.library_match import KIND_CATEGORY

HERE = Path(__file__).resolve().parent
STATUSES = api.REVIEW_STATES
KINDS = ("impact", "step", "scrape", "whoosh")
# The largest request body taken (JSON edits, decisions, previews; sign-in forms): an edit of
# a 10-minute shot — its curve at 100 Hz and hundreds of events — is well under 1 MB.
MAX_BODY_BYTES = 2 * 1024 * 1024
log = logging.getLogger("foleyflow.review.app")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra


class BodyTooLarge(HTTPException):
    """A request body over the limit (`BodyLimit`): 413. An HTTPException, so that FastAPI
    passes it on when it meets it parsing a form, rather than calling it a bad form (400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes "
                         f"({limit / 1024 / 1024:g} MB), the most this app takes")


class BodyLimit:
    """Refuse a request whose body is over `limit` bytes with 413, before it is read when it
    says its length, else as soon as more than that has arrived (a chunked upload): a body is
    read into memory, and one of 21 MB made the server take 23 GB."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                await _send_json(send, 400, {"error": "invalid",
                                             "detail": "Content-Length is not a number"})
                return
            if too_big:
                await _send_json(send, 413, {"error": "too_large",
                                             "detail": BodyTooLarge(self.limit).detail})
                return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)  # answered by the app's handler
            return message

        await self.app(scope, counted, send)


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


class LoginRequired(Exception):
    pass


def create_app(settings: Settings | None = None, *, applier: bool = True) -> FastAPI:
    """The app. `applier=False` leaves decisions' jobs to another process (tests, scale-out)."""
    settings = settings or get_settings()
    secure_cookies = settings.review_url.startswith("https://")
    worker = Applier(settings.review_apply_interval_s) if applier else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.configure_runtime()
        if worker is not None:
            worker.start()  # also picks up jobs a crash or a restart left behind
        yield
        if worker is not None:
            worker.stop()

    app = FastAPI(title="foleyflow review", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.applier = worker
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    # Inside the security headers' middleware (added below, so outside this one): a body over
    # the limit met while the endpoint reads it is raised there, answered by `too_large` (a
    # middleware between would wrap it in an ExceptionGroup).
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    # ------------------------------------------------------------ plumbing

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        response = await call_next(request)
        media = "'self' blob:"
        if settings.s3_endpoint_url:  # proxies are served from presigned S3 URLs
            media += " " + settings.s3_endpoint_url.rstrip("/")
        response.headers.setdefault(
            "Content-Security-Policy",
            f"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob:; media-src {media}; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail, **exc.extra},
                            status_code=exc.status)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"error": "too_large", "detail": exc.detail}, status_code=413)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={urllib.parse.quote(target)}", status_code=303)

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def session_of(request: Request) -> tuple[review.User, str] | None:
        token = request.cookies.get(auth.SESSION_COOKIE)
        if not token:
            return None
        with runtime.db().session() as s:
            row = review.session_by_token(s, auth.token_hash(token))
            if row is None:
                return None
            user = row.user
            s.expunge(user)
            return user, row.csrf_token

    def api_user(request: Request) -> tuple[review.User, str]:
        found = session_of(request)
        if found is None:
            raise ApiError(401, "unauthenticated", "sign in first (POST /login)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get(auth.CSRF_HEADER)
            if not auth.same(sent, found[1]):
                with runtime.db().session() as s:
                    review.audit(s, f"user:{found[0].name}", "refused:csrf",
                                 client=client_of(request), path=request.url.path)
                raise ApiError(403, "csrf", "missing or wrong CSRF token: reload the page")
        return found

    def page_user(request: Request) -> tuple[review.User, str]:
        found = session_of(request)
        if found is None:
            raise LoginRequired()
        return found

    def need(user: review.User, role: str, request: Request, what: str) -> None:
        try:
            review.require_role(user, role)
        except review.Forbidden as exc:
            with runtime.db().session() as s:
                review.audit(s, f"user:{user.name}", "refused:role", client=client_of(request),
                             path=request.url.path, needs=role, what=what)
            raise ApiError(403, "forbidden", f"{exc} ({what})") from None

    def find_shot(s: Session, reel: str, shot: str) -> api.Shot:
        row = api.get_shot(s, reel, shot)
        if row is None:
            raise ApiError(404, "not_found", f"no shot {shot!r} in reel {reel!r}")
        return row

    def tc(frame: int, rate: tuple[int, int], drop: bool) -> str:
        return ingest.timecode(frame, rate[0], rate[1], drop)

    def shot_url(reel: str, shot: str) -> str:
        q = urllib.parse.quote
        return f"/reels/{q(reel, safe='')}/shots/{q(shot, safe='')}"

    @functools.lru_cache(maxsize=4096)
    def envelope_doc(sha256: str, uri: str, size: int, mime: str) -> dict[str, Any]:
        return load_envelope({"sha256": sha256, "uri": uri, "bytes": size, "mime": mime})

    def env_of(row: api.Envelope) -> dict[str, Any]:
        ref = row.artifact.ref()
        # a copy: callers may edit it
        return dict(envelope_doc(ref["sha256"], ref["uri"], ref["bytes"], ref["mime"]))

    def age(since: dt.datetime) -> str:
        secs = max(0.0, (dt.datetime.now(dt.timezone.utc) - since).total_seconds())
        for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
            if secs >= n:
                return f"{int(secs // n)} {unit}"
        return "just now"

    def queue_rows(s: Session, reel: str | None, status: str | None, sort: str
                   ) -> list[dict[str, Any]]:
        rows = summaries(s, review.queue(s, reel=reel, status=status))  # no store reads
        if sort == "age":
            rows.sort(key=lambda r: r.since)
        return [{
            "reel": r.reel, "shot": r.shot, "record_in": tc(r.record_in_frame, r.rate,
                                                             r.drop_frame),
            "duration_s": round(r.duration_s, 3), "state": r.state, "version": r.version,
            "events": r.events,
            "confidence": None if r.confidence is None else round(r.confidence, 3),
            "doubt": None if r.doubt is None else round(r.doubt, 3),
            "age": age(r.since), "since": r.since.isoformat(),
            "url": shot_url(r.reel, r.shot)} for r in rows]

    def deliveries_behind(s: Session, reel: str | None) -> list[dict[str, Any]]:
        """Reels whose delivery is behind their decisions because applying them failed:
        retried by the worker (`retrying`) or left for a person (`failed`)."""
        return [b.to_dict() for b in review.deliveries_behind(s, reel=reel)
                if b.status in ("retrying", "failed")]

    def categories(s: Session, library: str) -> list[str]:
        return sorted({snd.category for snd in api.library_sounds(s, library)
                       if snd.kind == "oneshot"})

    def library_of(reel_row: api.Reel) -> tuple[str, int, str]:
        """The library, seed and synthesis backend the reel was passed with."""
        params = reel_row.pass_params or {}
        return (params.get("library") or settings.library, int(params.get("seed", 0)),
                params.get("backend") or "sampler")

    def shot_payload(s: Session, sh: api.Shot) -> dict[str, Any]:
        reel_row = sh.reel
        rate = (reel_row.rate_num, reel_row.rate_den)
        frame = reel_row.start_frame + sh.record_in_frame
        latest = api.latest_envelope(s, sh.id)
        if latest is None:
            raise ApiError(404, "not_found", f"{reel_row.name} {sh.name} has no envelope yet")
        notes = review.edit_notes(s, reel_row.name, sh.name)
        vers = []
        for env in review.versions(s, sh.id):
            vers.append({
                "version": env.version, "parent": env.parent_version, "source": env.source,
                "created_by": review.version_creator(s, env),
                "created_at": env.created_at.isoformat(), "state": env.state,
                "comment": notes.get(env.version),
                "decisions": [{"decision": d.decision, "by": d.agent.name,
                               "at": d.created_at.isoformat(), "comment": d.comment}
                              for d in env.decisions]})
        doc = env_of(latest)
        doc.setdefault("category", None)
        doc.setdefault("position", None)
        library, _seed, _backend = library_of(reel_row)
        stem = (api.shot_outputs(s, "synth", sh.id) or {}).get("mono") is not None
        return {
            "reel": reel_row.name, "shot": sh.name, "record_in": tc(frame, rate,
                                                                    reel_row.drop_frame),
            "record_in_s": sh.record_in_s, "duration_s": sh.duration_s, "rate": list(rate),
            "drop_frame": reel_row.drop_frame, "record_in_frame": frame,
            "state": latest.state, "latest_version": latest.version, "envelope": doc,
            "versions": vers, "categories": categories(s, library), "kinds": list(KINDS),
            "stem": stem, "foley_hint": sh.foley_hint,
        }

    def body_json(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise ApiError(422, "invalid", f"request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(422, "invalid", "request body must be a JSON object")
        return body

    def comment_of(body: dict[str, Any]) -> str | None:
        """The body's 'comment' (text or null, at most `review.COMMENT_MAX` characters),
        checked before anything is written: else 422 naming the field."""
        try:
            return review.clean_comment(body.get("comment"))
        except review.ReviewError as exc:
            raise ApiError(422, "invalid", str(exc), field="comment") from None

    def edited_envelope(s: Session, sh: api.Shot, posted: Any) -> dict[str, Any]:
        """The posted edit on top of the latest version's fixed fields, validated."""
        if not isinstance(posted, dict):
            raise ApiError(422, "invalid", "'envelope' must be an object")
        latest = api.latest_envelope(s, sh.id)
        base = env_of(latest) if latest else {}
        env = {"shot": sh.name, "rate_hz": base.get("rate_hz", 100),
               "duration_s": base.get("duration_s", sh.duration_s),
               "curve": posted.get("curve", base.get("curve")),
               "events": posted.get("events", base.get("events")),
               "prompt": posted.get("prompt", base.get("prompt")),
               "category": posted.get("category", base.get("category")),
               "position": posted.get("position", base.get("position"))}
        try:
            if not isinstance(env["curve"], list) or not isinstance(env["events"], list):
                raise ValueError("'curve' and 'events' must be lists")
            env["curve"] = [_number(v, f"curve sample {i}") for i, v in enumerate(env["curve"])]
            env["events"] = [_event(e, i) for i, e in enumerate(env["events"])]
            env["events"].sort(key=lambda e: e["t"])
            if env["category"] in ("", "auto", "(auto)"):
                env["category"] = None
            validate_envelope(env, where=f"{sh.reel.name} {sh.name}")
            env["position"] = position_of(env, where=f"{sh.reel.name} {sh.name}")
        except (TypeError, ValueError, KeyError) as exc:
            raise ApiError(422, "invalid", str(exc)) from None
        return env

    def wav_response(audio: np.ndarray, name: str) -> Response:
        stereo = np.repeat(np.asarray(audio, dtype=np.float32)[:, None], 2, axis=1)
        buf = io.BytesIO()
        sf.write(buf, np.clip(stereo, -1.0, 1.0), synth.SR, subtype="PCM_16", format="WAV")
        return Response(buf.getvalue(), media_type="audio/wav",
                        headers={"Content-Disposition": f'inline; filename="{name}.wav"',
                                 "Cache-Control": "no-store"})

    # ------------------------------------------------------------ signing in

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/", error: str | None = None) -> Response:
        token = auth.new_token()
        resp = templates.TemplateResponse(request, "login.html", {
            "user": None, "csrf_token": token, "next": _safe_next(next), "error": error})
        resp.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies, max_age=3600, path="/login")
        return resp

    @app.post("/login")
    def login(request: Request, username: str = Form(""), password: str = Form(""),
              csrf_token: str = Form(""), next: str = Form("/")) -> Response:
        client = client_of(request)
        if not auth.same(csrf_token, request.cookies.get(auth.LOGIN_CSRF_COOKIE)):
            raise ApiError(403, "csrf", "the sign-in form expired: reload it and try again")
        window = dt.timedelta(seconds=settings.review_login_window_s)
        with runtime.db().session() as s:
            by_user, by_client, oldest = review.failed_logins(
                s, username=username, client=client, window=window)
            limited = (by_user >= settings.review_login_limit
                       or by_client >= 4 * settings.review_login_limit)
            if limited:
                review.audit(s, username or "?", "login:limited", client=client)
        if limited:
            wait = window - (dt.datetime.now(dt.timezone.utc) - oldest) if oldest else window
            retry = int(wait.total_seconds()) + 1
            return JSONResponse({"error": "rate_limited", "detail": "too many failed sign-ins: "
                                 f"wait {retry} s and try again", "retry_after_s": retry},
                                status_code=429, headers={"Retry-After": str(retry)})
        with runtime.db().session() as s:
            user = review.get_user(s, username)
            ok = auth.verify_password(user.password_hash if user else None, password)
            if not ok or user is None:
                review.record_failed_login(s, username, client)
                review.audit(s, username or "?", "login:failed", client=client)
                s.commit()
                return login_page(request, next=next, error="wrong user name or password")
            if auth.needs_rehash(user.password_hash):
                user.password_hash = auth.hash_password(password)
            review.clear_failed_logins(s, username)
            token = auth.new_token()
            review.create_session(s, user, token_sha256=auth.token_hash(token),
                                  csrf_token=auth.new_token(), client=client,
                                  lifetime=dt.timedelta(hours=settings.review_session_hours))
            review.audit(s, f"user:{user.name}", "login", client=client)
        resp = RedirectResponse(_safe_next(next), status_code=303)
        resp.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=secure_cookies, max_age=int(settings.review_session_hours * 3600),
                        path="/")
        resp.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf_token: str = Form("")) -> Response:
        found = session_of(request)
        if found is not None:
            if not auth.same(csrf_token, found[1]):
                raise ApiError(403, "csrf", "missing or wrong CSRF token: reload the page")
            with runtime.db().session() as s:
                review.end_session(s, auth.token_hash(request.cookies[auth.SESSION_COOKIE]))
                review.audit(s, f"user:{found[0].name}", "logout", client=client_of(request))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(auth.SESSION_COOKIE, path="/")
        return resp

    # ------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request, reel: str | None = None, status: str = "pending_review",
                   sort: str = "age", who: tuple[review.User, str] = Depends(page_user)
                   ) -> Response:
        user, csrf = who
        status_filter = None if status == "all" else status
        if status_filter is not None and status_filter not in STATUSES:
            status_filter, status = "pending_review", "pending_review"
        with runtime.db().session() as s:
            rows = queue_rows(s, reel or None, status_filter, sort)
            counts = review.counts(s, reel=reel or None)
            reels = review.reel_names(s)
            behind = deliveries_behind(s, reel or None)
        return templates.TemplateResponse(request, "queue.html", {
            "user": user, "csrf_token": csrf, "rows": rows, "counts": counts, "reels": reels,
            "behind": behind, "filters": {"reel": reel or "", "status": status, "sort": sort}})

    @app.get("/reels/{reel}/shots/{shot}", response_class=HTMLResponse)
    def shot_page(request: Request, reel: str, shot: str,
                  who: tuple[review.User, str] = Depends(page_user)) -> Response:
        user, csrf = who
        with runtime.db().session() as s:
            sh = find_shot(s, reel, shot)
            pending = [(r.reel, r.index, r.shot)
                       for r in review.queue(s, status="pending_review")]
        here = (reel, sh.index, shot)
        after = [p for p in pending if p > here]
        before = [p for p in pending if p < here]
        boot = {
            "api": "/api" + shot_url(reel, shot),
            "video": "/media/" + "/".join(urllib.parse.quote(p, safe="") for p in (reel, shot))
                     + "/proxy.mp4",
            "can_edit": review.RANK[user.role] >= review.RANK["editor"],
            "can_decide": user.role == "supervisor",
            "queue_url": "/", "next_url": shot_url(after[0][0], after[0][2]) if after else None,
            "prev_url": shot_url(before[-1][0], before[-1][2]) if before else None,
            "user": user.name, "role": user.role}
        return templates.TemplateResponse(request, "shot.html", {
            "user": user, "csrf_token": csrf, "reel": reel, "shot": shot, "boot": boot})

    @app.get("/reels/{reel}/shots/{shot}/plot.png")
    def plot_png(reel: str, shot: str, v: str | None = None,
                 _who: tuple[review.User, str] = Depends(api_user)) -> Response:
        """The plot of version `v` (404 if the shot has none), or of the latest."""
        if v is not None and not (v.isascii() and v.isdigit()):
            raise ApiError(422, "invalid", f"v must be a version number, not {v[:40]!r}",
                           field="v")
        with runtime.db().session() as s:
            sh = find_shot(s, reel, shot)
            if v is not None:
                env_row = _version_row(s, sh, int(v))
            else:
                env_row = api.latest_envelope(s, sh.id)
            if env_row is None:
                raise ApiError(404, "not_found", f"{reel} {shot} has no envelope yet")
            doc = env_of(env_row)
            rate = (sh.reel.rate_num, sh.reel.rate_den)
            frame0, drop = sh.reel.start_frame + sh.record_in_frame, sh.reel.drop_frame
        fps = rate[0] / rate[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = plots.plot_envelope(
                doc, Path(tmp) / "plot.png",
                label_time=lambda t: tc(frame0 + int(t * fps + 1e-9), rate, drop),
                title=f"{reel} {shot} v{env_row.version} ({env_row.state.replace('_', ' ')})")
            data = out.read_bytes()
        return Response(data, media_type="image/png", headers={"Cache-Control": "private"})

    # ------------------------------------------------------------ JSON API

    @app.get("/api/queue")
    def api_queue(reel: str | None = None, status: str | None = None, sort: str = "age",
                  _who: tuple[review.User, str] = Depends(api_user)) -> dict[str, Any]:
        if status not in (None, "all", *STATUSES):
            raise ApiError(422, "invalid", f"status must be one of {', '.join(STATUSES)} or all")
        with runtime.db().session() as s:
            return {"rows": queue_rows(s, reel, None if status in (None, "all") else status,
                                       sort),
                    "counts": review.counts(s, reel=reel),
                    "deliveries_behind": deliveries_behind(s, reel)}

    @app.get("/api/reels/{reel}/shots/{shot}")
    def api_shot(reel: str, shot: str,
                 _who: tuple[review.User, str] = Depends(api_user)) -> dict[str, Any]:
        with runtime.db().session() as s:
            return shot_payload(s, find_shot(s, reel, shot))

    @app.get("/api/reels/{reel}/shots/{shot}/versions/{version}")
    def api_version(reel: str, shot: str, version: int,
                    _who: tuple[review.User, str] = Depends(api_user)) -> dict[str, Any]:
        with runtime.db().session() as s:
            return env_of(_version_row(s, find_shot(s, reel, shot), version))

    @app.post("/api/reels/{reel}/shots/{shot}/versions", status_code=201)
    async def api_save(request: Request, reel: str, shot: str,
                       who: tuple[review.User, str] = Depends(api_user)) -> Response:
        user = who[0]
        need(user, "editor", request, "saving an envelope version")
        body = body_json(await request.body())
        return await _in_thread(lambda: _save(request, reel, shot, user, body))

    def _save(request: Request, reel: str, shot: str, user: review.User,
              body: dict[str, Any]) -> Response:
        base = body.get("base_version")
        if not isinstance(base, int) or isinstance(base, bool):
            raise ApiError(422, "invalid", "'base_version' (the version the edit started "
                           "from) is required")
        comment = comment_of(body)
        with runtime.db().session() as s:
            sh = find_shot(s, reel, shot)
            env = edited_envelope(s, sh, body.get("envelope"))
            base_row = _version_row(s, sh, base)
            base_ref, shot_id = base_row.artifact.ref(), sh.id
        def audit(s: Session, version: int) -> None:  # in the version's own transaction
            review.audit(s, f"user:{user.name}", "edit", reel=reel, shot=shot,
                         version=version, client=client_of(request), base_version=base,
                         comment=comment, events=len(env["events"]))

        try:
            version, _ref, created = save_version(
                shot_id, env, source="edit", derived_from=base_ref,
                created_by=f"user:{user.name}", base_version=base, on_saved=audit)
        except review.StaleReview as exc:
            raise ApiError(409, "conflict", str(exc), latest_version=exc.latest_version,
                           latest_by=exc.latest_by, state=exc.state) from None
        with runtime.db().session() as s:
            payload = shot_payload(s, find_shot(s, reel, shot))
        return JSONResponse(payload, status_code=201 if created else 200)

    @app.post("/api/reels/{reel}/shots/{shot}/decision")
    async def api_decide(request: Request, reel: str, shot: str,
                         who: tuple[review.User, str] = Depends(api_user)) -> Response:
        user = who[0]
        need(user, "supervisor", request, "deciding on a shot")
        body = body_json(await request.body())
        return await _in_thread(lambda: _decide(request, reel, shot, user, body))

    def _decide(request: Request, reel: str, shot: str, user: review.User,
                body: dict[str, Any]) -> Response:
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ApiError(422, "invalid", "'version' (the version decided on) is required")
        comment = comment_of(body)
        expect = body.get("expect_state")
        if expect is not None and expect not in STATUSES:
            raise ApiError(422, "invalid", f"'expect_state' must be one of "
                           f"{', '.join(STATUSES)} or null", field="expect_state")
        try:
            with runtime.db().session() as s:
                sh = find_shot(s, reel, shot)
                live_user = review.require_user(s, user.name, "supervisor")
                _d, job = review.take_decision(
                    s, sh, version=version, decision=str(body.get("decision")), user=live_user,
                    comment=comment, expect_state=expect,
                    client=client_of(request), via="app")
                job_id = job.id
        except review.StaleReview as exc:
            raise ApiError(409, "conflict", str(exc), latest_version=exc.latest_version,
                           latest_by=exc.latest_by, state=exc.state) from None
        except review.ReviewError as exc:
            raise ApiError(422, "invalid", str(exc)) from None
        if worker is not None:
            worker.poke()
        with runtime.db().session() as s:
            payload = shot_payload(s, find_shot(s, reel, shot))
        return JSONResponse({**payload, "job": job_id})

    @app.post("/api/reels/{reel}/shots/{shot}/preview")
    async def api_preview(request: Request, reel: str, shot: str,
                          who: tuple[review.User, str] = Depends(api_user)) -> Response:
        need(who[0], "editor", request, "rendering a preview of an edit")
        body = body_json(await request.body())

        def render() -> Response:
            with runtime.db().session() as s:
                sh = find_shot(s, reel, shot)
                env = edited_envelope(s, sh, body.get("envelope"))
                shot_id, how = sh.id, library_of(sh.reel)
            return wav_response(_render(shot_id, env, *how), f"{shot}_preview")

        return await _in_thread(render)

    @app.get("/api/reels/{reel}/shots/{shot}/versions/{version}/audio")
    async def api_version_audio(reel: str, shot: str, version: int,
                                _who: tuple[review.User, str] = Depends(api_user)) -> Response:
        def render() -> Response:
            with runtime.db().session() as s:
                sh = find_shot(s, reel, shot)
                env = env_of(_version_row(s, sh, version))
                shot_id, how = sh.id, library_of(sh.reel)
            return wav_response(_render(shot_id, env, *how), f"{shot}_v{version}")

        return await _in_thread(render)

    def _render(shot_id: int, env: dict[str, Any], library: str, seed: int,
                backend: str) -> np.ndarray:
        try:
            return synth.preview(shot_id, env, library=library, seed=seed, backend=backend)
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc)) from None

    # ------------------------------------------------------------ media

    @app.get("/media/{reel}/{shot}/proxy.mp4")
    def media_proxy(reel: str, shot: str,
                    _who: tuple[review.User, str] = Depends(api_user)) -> Response:
        # The names are looked up in the database: nothing from the URL reaches a file path.
        with runtime.db().session() as s:
            sh = find_shot(s, reel, shot)
            ref = (api.shot_outputs(s, "proxy", sh.id) or {}).get("proxy")
        if ref is None:
            raise ApiError(404, "not_found", f"{reel} {shot} has no picture proxy yet")
        store = runtime.store()
        url = store.presigned_url(ref, dt.timedelta(hours=1))
        if url.startswith(("http://", "https://")):
            return RedirectResponse(url, status_code=307)  # S3 answers the range requests
        return FileResponse(store.local_path(ref), media_type="video/mp4",
                            headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """The app answers (`ok`); decisions waiting to be applied (`pending_jobs`: queued,
        running, or failed once and waiting for their retry) and those no run takes up by
        itself (`failed_jobs`); per reel whose delivery is behind because applying failed,
        why (`deliveries_behind`)."""
        with runtime.db().session() as s:
            pending = len(review.pending_jobs(s))
            failed = len(review.failed_jobs(s))
            behind = deliveries_behind(s, None)
        return {"ok": True, "pending_jobs": pending, "failed_jobs": failed,
                "deliveries_behind": behind,
                "applier_error": worker.last_error if worker else None}

    return app


def _number(value: Any, what: str) -> float:
    """`value` as a float, or ValueError naming `what` (a string or null is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, not {value!r:.40}")
    return float(value)


def _event(e: Any, i: int = 0) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise TypeError("each event must be an object")
    kind = str(e.get("kind", "impact"))
    if kind not in KINDS and kind not in KIND_CATEGORY:
        raise ValueError(f"event kind {kind!r} is not one of {', '.join(KINDS)}")
    for key in ("t", "strength"):
        if key not in e:
            raise ValueError(f"event {i} has no {key!r}")
    # to the microsecond: a frame boundary at an NTSC rate (f·1001/30000 s) kept to 0.1 ms
    # could fall up to 2.4 samples short of it, and then in the frame before
    out = {"t": round(_number(e["t"], f"event {i} t"), 6),
           "strength": round(_number(e["strength"], f"event {i} strength"), 4),
           "x": _number(e.get("x", 0.5), f"event {i} x"),
           "y": _number(e.get("y", 0.5), f"event {i} y"), "kind": kind}
    if "confidence" in e and e["confidence"] is not None:
        out["confidence"] = _number(e["confidence"], f"event {i} confidence")
    return out


def _version_row(s: Session, sh: api.Shot, version: int) -> api.Envelope:
    for env in review.versions(s, sh.id):
        if env.version == version:
            return env
    raise ApiError(404, "not_found", f"{sh.reel.name} {sh.name} has no version {version}")


def _safe_next(target: str | None) -> str:
    """Only same-site paths ("/..."), never "//host" or a scheme: no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _in_thread(fn: Callable[[], Response]) -> Response:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)
