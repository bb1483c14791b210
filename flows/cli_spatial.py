"""`foley eval spatial`: check a delivery's spatialization, or the tracker on rendered scenes
(method and targets: flows/eval_spatial.py, docs/SPATIAL.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def _print_delivery(report: dict[str, Any]) -> None:
    typer.echo(f"reel {report['reel']}: B-format {report['format']}, {len(report['events'])} events"
               f" ({report['silent_events']} silent, not measured)")
    typer.echo(f"{'shot':<7}{'timecode':<13}{'kind':<8}{'intended az/el':>16}{'measured az/el':>16}"
               f"{'error':>8}{'static':>8}{'L-R dB':>8}{'ITD ms (head)':>16}")
    for r in report["events"]:
        itd = f"{r['itd_ms']:+.3f} ({r['itd_expected_ms']:+.3f})" if "itd_ms" in r else ""
        typer.echo(f"{r['shot']:<7}{r['timecode']:<13}{str(r['kind']):<8}"
                   f"{r['intended_az']:>8.1f}/{r['intended_el']:<7.1f}{r['measured_az']:>8.1f}/"
                   f"{r['measured_el']:<7.1f}{r['error_deg']:>8.2f}{'yes' if r['static'] else 'no':>8}"
                   f"{r['stereo_lr_db']:>8.1f}{itd:>16}")
    s = report["summary"]
    st, mv = s["doa_static_deg"], s["doa_moving_deg"]
    typer.echo(f"DOA error, static sources: median {_fmt(st['median'])}°, max {_fmt(st['max'])}° "
               f"(n={st['n']}; target ≤ 2°: {'met' if s['doa_static_ok'] else 'NOT met'})")
    typer.echo(f"DOA error, moving sources: median {_fmt(mv['median'])}°, max {_fmt(mv['max'])}° "
               f"(n={mv['n']}; the source moves during the 100 ms window)")
    typer.echo(f"W vs mono sum: max {_fmt(s['w_vs_mono_max_db'])} dB over "
               f"{len(report['w_vs_mono'])} shots (target ≤ 0.5 dB: "
               f"{'met' if s['w_vs_mono_ok'] else 'NOT met'})")
    typer.echo(f"binaural ITD sign right: {s['itd_sign_ok']}; |ITD − head model| median "
               f"{_fmt(s['itd_error_ms']['median'])} ms, max {_fmt(s['itd_error_ms']['max'])} ms")
    typer.echo(f"stereo keeps left/right: {s['stereo_order_ok']} lateral events")


def _print_scenes(report: dict[str, Any]) -> None:
    typer.echo(f"{'scene':<7}{'kind':<9}{'fps':>7}{'pan':>7}{'objects':>9}{'layers':>8}{'points':>8}"
               f"{'missed':>8}{'median°':>9}{'p90°':>8}{'max°':>8}")
    for r in report["scenes"]:
        typer.echo(f"{r['scene']:<7}{r['kind']:<9}{r['fps']:>7.2f}{r['pan']:>7.2f}{r['objects']:>9}"
                   f"{r['layers']:>8}{r['points']:>8}{r['unsounded']:>8}{_fmt(r['median']):>9}"
                   f"{_fmt(r['p90']):>8}{_fmt(r['max']):>8}")
    s = report["summary"]
    a, every = s["tracked_az_deg"], s["all_points_deg"]
    typer.echo(f"tracked azimuth vs truth (HFOV {s['hfov_deg']}°): median {_fmt(a['median'])}°, "
               f"p90 {_fmt(a['p90'])}°, max {_fmt(a['max'])}° over {a['n']} sounded points "
               f"(target p90 ≤ 5°: {'met' if s['p90_ok'] else 'NOT met'}; median ≤ 5°: "
               f"{'met' if s['median_ok'] else 'NOT met'})")
    typer.echo(f"  {s['unsounded_points']} true points the envelope did not sound (missed contacts, "
               f"slides it did not hear); all {every['n']} points: median {_fmt(every['median'])}°, "
               f"p90 {_fmt(every['p90'])}°")
    for kind, k in s["by_kind"].items():
        typer.echo(f"  {kind:<8} median {_fmt(k['median'])}°, p90 {_fmt(k['p90'])}° (n={k['n']})")


def eval_spatial(
    delivery: Annotated[Optional[Path], typer.Argument(help="A delivery folder written by `foley run --out` (reads manifest.json, the FOA, stereo and binaural mixes, the per-shot mono stems and position files).")] = None,
    scenes: Annotated[int, typer.Option(help="Instead of a delivery: render this many procedural scenes with known object positions and compare the tracked azimuth with the truth (about 10 s per scene).")] = 0,
    seed: Annotated[int, typer.Option(help="With --scenes: which scenes (the same seed renders the same scenes).")] = 0,
    hfov: Annotated[float, typer.Option(help="With --scenes: the camera's horizontal field of view in degrees.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (every event / point and the summary).")] = False,
) -> None:
    """Check where the Foley sits.

    With DELIVERY: the direction of arrival of every event, estimated from the delivered B-format
    mix with the intensity vector over 100 ms after its onset, against the direction intended
    (static sources: within 2°); the W channel against the mono stems (within 0.5 dB); the
    binaural mix's interaural time difference against the spherical head; the stereo mix's
    left/right order. Times are record timecode.

    With --scenes N: the tracker against the truth on N rendered scenes: at every true contact
    and every 100 ms of every slide the pass sounds, the azimuth of the layer playing that
    object against where the object is (within 5° at the 90th percentile).

    Example: `foley eval spatial delivery/reel1`, `foley eval spatial --scenes 20 --json`.
    Exit code 0 when the targets are met, 1 when not, 2 for a folder that is not a delivery.
    """
    from flows.eval_spatial import DeliveryError, evaluate_delivery, evaluate_scenes

    if (delivery is None) == (scenes <= 0):
        _fail("give a delivery folder or --scenes N (one of them)")
    if delivery is not None:
        try:
            report = evaluate_delivery(delivery)
        except DeliveryError as exc:
            _fail(str(exc))
        ok = report["summary"]["doa_static_ok"] and report["summary"]["w_vs_mono_ok"]
        printer = _print_delivery
    else:
        from rich.progress import Progress

        with Progress(console=_stderr(), transient=True) as progress:
            bar = progress.add_task("scenes", total=scenes)
            report = evaluate_scenes(scenes, seed=seed, hfov_deg=hfov,
                                     progress=lambda: progress.advance(bar))
        ok = report["summary"]["p90_ok"] and report["summary"]["median_ok"]
        printer = _print_scenes
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        printer(report)
    raise typer.Exit(0 if ok else 1)


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True)
