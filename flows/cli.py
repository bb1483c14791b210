"""`foley`: the command line of foleyflow.

Exit codes: 0 success (for a pass: no shot skipped or failed; shots waiting for review or
omitted are not failures); 1 the pass ran but some shots were skipped or failed (they are
listed), or the database or artifact store a command needs is away (one line naming it:
`main`); 2 bad input, an unusable setting or usage (nothing written); 130 stopped with Ctrl-C,
143 stopped by SIGTERM (both with one line; finished work is kept, see `flows.interrupt`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core


def _flags_show_no_type() -> None:
    """Typer 0.29's help gives every flag a type column, `--help <bool>`, `--json <bool>`, as
    if it took a value; a flag takes none, so it shows none (as Click's own help does)."""
    option = typer.core.TyperOption
    shown = option.display_type_rich

    def display_type_rich(self: typer.core.TyperOption, ctx: object) -> str | None:
        return None if self.is_flag and not self.count else shown(self, ctx)

    option.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()

app = typer.Typer(
    name="foley",
    help=(
        "foleyflow — Foley for locked picture.\n\n"
        "A locked edit goes in (OTIO, EDL, FCP7 XML, FCPX XML, AAF); per-shot envelopes (when "
        "sound happens and how loud) are predicted from the picture and held for approval; "
        "approved envelopes are synthesized from a sound library, spatialized and conformed "
        "into a delivery folder: the edit with a FOLEY track, 48 kHz / 24-bit Broadcast WAV "
        "stems and mixes stamped with the reel's timecode, a preview movie and manifest.json.\n\n"
        "Embedded mode keeps everything under ./.foley (SQLite, artifact folder); set "
        "FOLEY_DB_URL / FOLEY_STORE_URL for a studio. Exit codes: 0 ok (shots waiting for "
        "review or omitted are not failures), 1 some shots skipped or failed, or the database "
        "/ artifact store away, 2 bad input or setting, 130 Ctrl-C."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
)
library_app = typer.Typer(help="Index and inspect sound libraries.", no_args_is_help=True)
demo_app = typer.Typer(help="The bundled demo reel (rendered by foleyflow itself).", no_args_is_help=True)
app.add_typer(library_app, name="library")
app.add_typer(demo_app, name="demo")


def _add_review() -> None:
    from flows.cli_review import review_app

    app.add_typer(review_app, name="review")


_add_review()


def _add_models() -> None:
    from flows.cli_models import dataset_app, eval_app, train_app

    app.add_typer(dataset_app, name="dataset")
    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")


_add_models()


def _add_spatial() -> None:
    from flows.cli_models import eval_app
    from flows.cli_spatial import eval_spatial

    eval_app.command("spatial")(eval_spatial)


_add_spatial()


def _add_synth() -> None:
    from flows.cli_models import eval_app, train_app
    from flows.cli_synth import eval_synth, generate, train_synth

    app.command("generate")(generate)
    train_app.command("synth")(train_synth)
    eval_app.command("synth")(eval_synth)


_add_synth()


def _add_serve() -> None:
    from flows.cli_serve import serve

    app.command("serve")(serve)


_add_serve()


def _prefect_defaults() -> None:
    """Quiet, local Prefect unless the studio configured one (PREFECT_API_URL), its home under
    the embedded mode's (`.foley/prefect`). Prefect reads its settings once, when it is first
    imported, and commands import modules that import it before they start work, so this also
    runs when the CLI is loaded (below); commands call it again before their flows run."""
    from flows.settings import get_settings

    os.environ.setdefault("PREFECT_HOME", str((get_settings().home / "prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Prefect gives its in-process server 20 s to start; a busy 2-core machine needs more, and
    # the first start on a fresh machine builds its database (over 20 s, session 16)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # an unusable FOLEY_HOME is reported in one line by `main`, not by Prefect's import warning
    warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")
    # the ephemeral server times out when its home is missing; reading the manual needs none
    if not _asks_for_help(sys.argv[1:]):
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def _asks_for_help(args: list[str]) -> bool:
    """`foley`, `foley --help`, `foley run --help`: the manual, and nothing made on disk."""
    return not args or "--help" in args


try:
    _prefect_defaults()
except (ValueError, OSError):   # a bad FOLEY_* setting or an unwritable home: the command
    pass                        # that needs them reports it


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def run(
    timeline: Annotated[Path, typer.Argument(help="The locked edit: .otio .otioz .edl .xml .fcpxml .fcpxmld .aaf")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Delivery folder to write.")],
    fps: Annotated[Optional[float], typer.Option(help="Frame rate of an EDL (EDLs carry none); 23.976 means 24000/1001.")] = None,
    media_root: Annotated[Optional[Path], typer.Option(help="Folder searched (recursively) for media the edit names.")] = None,
    approve: Annotated[str, typer.Option(help="auto: policy:auto approves each new prediction that meets --approve-threshold, on shots no person has edited or decided on (those wait for a supervisor). queue: every envelope waits for a supervisor.")] = "auto",
    approve_threshold: Annotated[float, typer.Option(help="With --approve auto (0–1): approve a prediction only if every event's confidence reaches this and, for the model's, its doubt (the highest score among the candidates its contact scorer dropped) is at most 1 − this; the others wait in the queue. 0 approves every prediction. docs/REVIEW.md")] = 0.0,
    envelope: Annotated[str, typer.Option(help="How envelopes are predicted: baseline (motion tracking) or model (the trained RMS-Mapper, models/README.md).")] = "baseline",
    envelope_checkpoint: Annotated[Optional[Path], typer.Option(help="With --envelope model: the RMS-Mapper checkpoint to use, e.g. one whose contact scorer was refitted on your reels (`foley train calibrate … --out`). Default FOLEY_ENVELOPE_CHECKPOINT, else the shipped one.")] = None,
    library: Annotated[Optional[str], typer.Option(help="Indexed sound library to draw from (default: the built-in kit).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthesis variations (recorded in provenance).")] = 0,
    hfov: Annotated[Optional[float], typer.Option(help="Camera's horizontal field of view in degrees: where the picture's edges sit around the listener (default: the edit's metadata foleyflow.hfov_deg, else 60). docs/SPATIAL.md")] = None,
    foa_format: Annotated[str, typer.Option(help="B-format of the FOA stems and mix: ambix (ACN/SN3D) or fuma (WXYZ, W -3 dB).")] = "ambix",
    reverb_db: Annotated[Optional[float], typer.Option(help="Add a room (early reflections + tail) at this send level in dB, e.g. -18; off by default.")] = None,
    rt60: Annotated[float, typer.Option(help="Reverberation time of that room in seconds.")] = 0.5,
    backend: Annotated[str, typer.Option(help="Synthesis: sampler (one-shots and textures from the library) or diffusion (the trained diffusion synthesizer, prompted by the envelope's prompt / the FOLEY marker; docs/SYNTHESIS.md).")] = "sampler",
) -> None:
    """Run the Foley pass on an edit and write the delivery folder.

    Example: `foley run reel1.otio --out delivery/reel1`. A shot whose media is missing (or
    has no picture, or is retimed) is listed as skipped, one whose media cannot be decoded or
    whose work fails (no sound in the library for it, say) as failed, each with its reason; the
    rest of the reel delivers (exit code 1).
    """
    from tasks.ingest import TimelineError, read_timeline
    from tasks.spatial import reel_spatial_params

    from flows.foley_pass import check_approval

    try:
        check_approval(approve, approve_threshold)
    except ValueError as exc:
        fail(str(exc))
    if envelope not in ("baseline", "model"):
        fail(f"--envelope must be baseline or model, not {envelope!r}")
    if backend not in ("sampler", "diffusion"):
        fail(f"--backend must be sampler or diffusion, not {backend!r}")
    if envelope_checkpoint is not None and envelope != "model":
        fail(f"--envelope-checkpoint {envelope_checkpoint} is the model estimator's: add "
             "--envelope model")
    if envelope == "model":  # a bad checkpoint is one clear error, not a reel of failed shots
        from flows.settings import get_settings
        from tasks.envelope import check_checkpoint

        try:
            envelope_checkpoint = check_checkpoint(
                envelope_checkpoint or get_settings().envelope_checkpoint).resolve()
        except ValueError as exc:
            fail(str(exc))
    if backend == "diffusion":  # a missing checkpoint is one clear error, not a failed reel
        from models.synth_pipeline import MissingCheckpoint
        from tasks.synth import diffusion_model

        try:
            diffusion_model()
        except (MissingCheckpoint, ValueError) as exc:
            fail(str(exc))
    spatial_options = {"hfov_deg": hfov, "fmt": foa_format, "reverb_db": reverb_db, "rt60_s": rt60}
    try:  # validate before anything is written
        edit, spec = read_timeline(timeline, fps=fps, media_root=media_root)
        reel_spatial_params(edit, spec, **spatial_options)
    except (TimelineError, ValueError) as exc:
        fail(str(exc))
    if not spec.shots:
        fail(f"{timeline}: the edit has no picture clips to work on")
    from tasks.delivery import DeliveryFolderError, check_delivery_folder

    try:  # a folder that cannot take the delivery is refused before the pass does any work
        check_delivery_folder(out, spec.name, edit=timeline,
                              media=[sh.source_path for sh in spec.shots])
    except DeliveryFolderError as exc:
        fail(str(exc))
    _prefect_defaults()
    from flows.foley_pass import configured_pass
    from flows.interrupt import STOPPED_RUN, stopped_by_signal

    with stopped_by_signal(STOPPED_RUN):  # ^C / SIGTERM: one line, 130 / 143, server stopped
        report = configured_pass()(
            str(timeline), str(out), fps=fps, media_root=str(media_root) if media_root else None,
            approve=approve, library=library, seed=seed, envelope_estimator=envelope,
            approve_threshold=approve_threshold, spatial_options=spatial_options,
            backend=backend,
            envelope_checkpoint=str(envelope_checkpoint) if envelope_checkpoint else None,
        )
    m = report.manifest
    delivered = sum(1 for s in m["shots"] if s["status"] == "delivered")
    typer.echo(f"{report.reel}: {delivered}/{len(m['shots'])} shots delivered to {out} "
               f"(timeline start {m['timeline_start']})")
    for s in m["shots"]:
        if s["status"] != "delivered":
            typer.echo(f"  {s['name']} @ {s['record_in']}: {s['status']}"
                       f"{' — ' + s['skipped_reason'] if s['skipped_reason'] else ''}")
    for sh in report.shots:
        if sh.note:
            typer.echo(f"  {sh.note}")
    waiting = [s for s in m["shots"] if s["status"] in ("pending_review", "retake_requested")]
    if waiting:
        typer.echo(f"{len(waiting)} shot(s) wait for review: `foley review serve` (the app) or "
                   f"`foley review list --reel {report.reel}`; each decision synthesizes its "
                   f"shot, and {out} is re-conformed once every shot is approved or omitted")
    raise typer.Exit(report.exit_code)


@library_app.command("index")
def library_index(
    folder: Annotated[Path, typer.Argument(help="Folder of recordings (wav, flac, ogg, aiff, mp3); a catalog.csv is used if present.")],
    name: Annotated[Optional[str], typer.Option(help="Library name (default: the folder's name).")] = None,
) -> None:
    """Index a folder of recordings: captions, loudness and attack trimming done once here."""
    from flows.library import index_folder
    from flows.settings import get_settings

    if not folder.is_dir():
        fail(f"{folder} is not a folder of recordings")
    get_settings().configure_runtime()
    n = index_folder(folder, name or folder.resolve().name)
    typer.echo(f"indexed {n} sounds from {folder} as library {name or folder.resolve().name!r}")


@library_app.command("list")
def library_list(
    name: Annotated[Optional[str], typer.Argument(help="Library to list (default: all).")] = None,
) -> None:
    """List indexed sounds: library, category, material, kind, caption."""
    from db import api
    from flows.settings import get_settings
    from tasks import runtime

    get_settings().configure_runtime()
    with runtime.db().session() as s:
        sounds = api.library_sounds(s, name)
        if name is not None and not sounds:
            known = sorted({r.library for r in api.library_sounds(s, None)})
            fail(f"no library {name!r} (indexed: {', '.join(known) or 'none'}; index one with "
                 f"`foley library index DIR --name {name}`)")
        for r in sounds:
            typer.echo(f"{r.library}\t{r.category}\t{r.material}\t{r.kind}\t{r.duration_s:.2f}s\t{r.caption}")


@demo_app.command("make")
def demo_make(
    folder: Annotated[Path, typer.Argument(help="Where to write the demo media and edit.")] = Path("demo"),
) -> None:
    """Render the demo scenes and cut them into `demo_reel.otio` (starts at 01:00:00:00)."""
    from flows.cli_models import file_in_the_way
    from flows.demo import make_demo_reel

    blocked = file_in_the_way(folder)
    if blocked is not None:
        where = "" if blocked == folder else f"{folder}: "
        fail(f"{where}{blocked} is a file, not a folder — name a folder for the demo media "
             "and edit")
    path = make_demo_reel(folder)
    typer.echo(f"demo reel written: {path}")


@app.command()
def provenance(
    file: Annotated[Path, typer.Argument(help="Any delivered or stored file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the chain from a file back to the edit and the media it came from."""
    from flows.provenance import ChangedFile, describe

    if not file.is_file():
        fail(f"{file} is not a file")
    try:
        text = describe(file, as_json=as_json)
    except ChangedFile as exc:
        fail(str(exc))
    if text is None:
        from db.api import redact_url
        from tasks import runtime

        fail(f"{file} is not known to the provenance database {redact_url(runtime.db().url)} "
             "(no artifact has its content): foleyflow did not write it, or wrote it with "
             "another database (FOLEY_DB_URL)")
    typer.echo(text)


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Working folder for the benchmark reel.")] = Path(".foley/bench"),
    long: Annotated[bool, typer.Option("--long", help="Instead: a long generated reel (--minutes), one cold pass per worker count in a child process; minutes of picture per hour, per-stage times, peak memory (docs/BENCHMARKS.md).")] = False,
    minutes: Annotated[float, typer.Option(help="With --long: length of the generated reel.")] = 20.0,
    workers: Annotated[str, typer.Option(help="With --long: shots in flight to measure, comma-separated.")] = "1,2",
    reference_minutes: Annotated[float, typer.Option(help="With --long: length of the short reel whose peak memory the long one is compared with (0: none).")] = 2.0,
) -> None:
    """Time the pass on the demo reel per stage, against ffmpeg decode-only of the same media;
    with --long, stream a feature-length reel through it (throughput, stage times, peak RSS)."""
    _prefect_defaults()
    if long:
        from flows.bench_long import run_long_bench

        try:
            counts = tuple(int(n) for n in workers.split(","))
        except ValueError:
            fail(f"--workers must be numbers separated by commas, not {workers!r}")
        typer.echo(json.dumps(run_long_bench(out / "long", minutes=minutes, workers=counts,
                                             reference_minutes=reference_minutes), indent=2))
        return
    from flows.bench import run_bench

    typer.echo(json.dumps(run_bench(out), indent=2))


db_app = typer.Typer(help="The provenance database: schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    url: Annotated[Optional[str], typer.Option("--url", help="Database URL (default: FOLEY_DB_URL, else the embedded SQLite under FOLEY_HOME). In a studio, the migration role's URL.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Then verify the database matches this foleyflow's models.")] = False,
) -> None:
    """Bring the provenance database to this foleyflow's newest schema (prints before → after)."""
    from db import migrate
    from db.engine import redact_url
    from flows.settings import get_settings

    target = url or get_settings().resolved_db_url()
    try:
        typer.echo(migrate.upgrade(target))
        if check:
            migrate.check(target)
            typer.echo("schema matches db/schema.py")
    except migrate.MigrationError as exc:
        fail(str(exc))
    except Exception as exc:  # cannot connect, bad credentials: say where, never the password
        said = service_error(exc, db_url=target)
        if said is None:
            raise
        fail(said, 1)


def _db_trouble(e: BaseException) -> str | None:
    """What to do about a DBAPI error that is the database's (not a bug): None for the rest —
    SQL errors, constraint violations, deadlocks, a cancelled query (SQLite calls even a
    missing column an OperationalError, so it is recognised by its message)."""
    from db.engine import _PERMANENT, is_transient

    orig = getattr(e, "orig", None)
    text = str(orig).lower()
    driver = type(orig).__module__.split(".")[0]
    if driver in ("psycopg2", "psycopg"):
        code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
        if code is None or code.startswith(("08", "28", "3D", "57P")):   # never connected,
            if any(p in text for p in _PERMANENT):      # refused, auth, no such database
                return "Check FOLEY_DB_URL: its host, user, password and database name"
            return ("Check that the database server is running and reachable, then run the "
                    "command again")
        return None
    if is_transient(e):
        return ("Check that the database server is running and reachable, then run the "
                "command again")
    if driver == "sqlite3" and any(m in text for m in (
            "unable to open database file", "database is locked", "disk i/o error",
            "readonly database", "file is not a database")):
        return ("Check that the database file and its folder are readable and writable, and "
                "that no other process holds it for long, then run the command again")
    return None


def service_error(exc: BaseException, *, db_url: str | None = None) -> str | None:
    """The one line a command prints when the database or the artifact store it needs failed
    it — away past the retry budget, refusing the connection or the credentials, behind this
    foleyflow's schema, missing an artifact — else None (a bug: its traceback is worth having).
    Follows the exception's causes as Python prints them (an exception raised `from None`
    hides its context). The database — `db_url`, else the one the command connected to, else
    the settings' — is named without its password."""
    from sqlalchemy.exc import DBAPIError

    from db.engine import DatabaseUnavailable, reason_of, redact_url
    from db.migrate import MigrationError
    from tasks.store import StoreError

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DatabaseUnavailable):
            return str(e)
        if isinstance(e, MigrationError):
            return " ".join(str(e).split())
        if isinstance(e, DBAPIError):
            advice = _db_trouble(e)
            if advice is None:
                return None
            if db_url is None:
                from tasks import runtime
                with contextlib.suppress(ValueError):  # broken settings: the reason says enough
                    db_url = runtime.db_url()
            where = f" {redact_url(db_url)}" if db_url else ""
            return f"the provenance database{where} cannot be used: {reason_of(e)}. {advice}"
        if isinstance(e, StoreError):
            return (f"artifact store: {e}. Check that the store (FOLEY_STORE_URL) is reachable "
                    "and holds the project's artifacts, then run the command again")
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


class _ShutdownNoise(logging.Filter):
    """Drops what Prefect's in-process server logs when the command ends while one of its
    services is still writing: a task-run event it could not flush, cancelled by the server's
    own shutdown (about 70 traceback lines ending in CancelledError after a run that
    succeeded; the ephemeral server and its records end with the command anyway)."""

    LOGGERS = ("prefect.server.services.task_run_recorder",)  # the one seen to do it

    def filter(self, record: logging.LogRecord) -> bool:
        import asyncio

        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, asyncio.CancelledError):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def main() -> None:
    for name in _ShutdownNoise.LOGGERS:
        logging.getLogger(name).addFilter(_ShutdownNoise())
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a service away: one line and exit 1, as the pass reports it
        from flows.settings import setting_error
        from tasks.delivery import DeliveryFolderError

        if isinstance(exc, DeliveryFolderError):  # the folder refused (2), or its disk (1)
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            sys.exit(exc.exit_code)
        bad_setting = setting_error(exc)  # bad input too: one line and exit 2
        if bad_setting is not None:
            typer.secho(f"error: {bad_setting}", fg=typer.colors.RED, err=True)
            sys.exit(2)
        message = service_error(exc)
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
