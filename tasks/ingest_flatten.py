"""What the audience sees: the picture clips visible on the record side of an edit.

Part of `tasks.ingest`. Video tracks (and stacks and tracks nested inside them) are walked
bottom to top and each clip "paints" its record interval over what lies beneath, so the
top-most enabled clip wins; gaps paint nothing, so lower tracks show through them.

Generator clips (titles, colour mattes, bars — no source media) paint beneath every media
clip whatever their track: a title over a shot does not hide the action the Foley follows.
They become (skipped) shots only where nothing photographed is visible. Black filler (an EDL's
BL events, FCP slugs) is a gap.

Transitions: the cut between the two sides is placed at the transition's midpoint, the
moment the picture is half one shot, half the other. Formats disagree on where a dissolve's
nominal cut lies (OTIO files centre it; the EDL and AAF readers put it at the dissolve's start),
but they agree on its midpoint, so an edit yields the same shots in every format. A side
whose cut moves later plays on into its handle; shots tile the record side without overlap.

Times on the record side are float frames at the timeline rate counted from the timeline
start; `tasks.ingest` rounds them to whole frames.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import opentimelineio as otio

BLACK_GENERATORS = ("black", "slug", "blackness")
_FOLEY_RE = re.compile(r"FOLEY\s*:\s*(.+)", re.I | re.S)


@dataclass(frozen=True)
class Piece:
    """A stretch of one clip visible on the record side."""

    rec_lo: float
    rec_hi: float
    clip: otio.schema.Clip
    src_lo_s: float  # clip source time (media-reference clock, seconds) shown at rec_lo
    scalar: float  # source seconds per record second (speed effects of the clip and of the
    # compositions it sits in; 0 for a freeze frame, negative when reversed)

    def cut(self, lo: float, hi: float, fps: float) -> Piece:
        """The part of this piece between record frames lo and hi."""
        return replace(self, rec_lo=lo, rec_hi=hi,
                       src_lo_s=self.src_lo_s + (lo - self.rec_lo) / fps * self.scalar)


@dataclass(frozen=True)
class Hint:
    """A Foley hint: a "FOLEY: …" marker at a record frame, or (rec None) a clip's metadata.

    `clip` is set when the hint belongs to that clip only."""

    rec: float | None
    text: str
    clip: otio.schema.Clip | None


@dataclass
class Flat:
    """The visible picture of an edit."""

    pieces: list[Piece] = field(default_factory=list)  # sorted, non-overlapping
    zero_length: list[tuple[float, otio.schema.Clip]] = field(default_factory=list)
    hints: list[Hint] = field(default_factory=list)
    extent: float = 0.0  # record frames covered by the enabled video tracks


def foley_text(marker: otio.schema.Marker) -> str | None:
    """The text after "FOLEY:" in a marker's name or comment, if any."""
    for text in (marker.name, getattr(marker, "comment", "")):
        m = _FOLEY_RE.search(text or "")
        if m and m.group(1).strip():
            return " ".join(m.group(1).split())
    return None


def _time_scalar(item: otio.core.Item) -> float:
    scalar = 1.0
    for fx in item.effects:
        if isinstance(fx, otio.schema.LinearTimeWarp):  # FreezeFrame is one with scalar 0
            scalar *= fx.time_scalar
    return scalar


def media_start_s(clip: otio.schema.Clip) -> float:
    """Where the clip's media begins on the source clock (its camera timecode), in seconds;
    0 when the edit declares no usable available range."""
    avail = getattr(clip.media_reference, "available_range", None)
    if avail is None or not avail.start_time.rate > 0:
        return 0.0
    start = avail.start_time.to_seconds()
    return start if start == start and abs(start) != float("inf") else 0.0


class _Walker:
    """Depth-first walk in paint order (bottom to top), collecting pieces and markers."""

    def __init__(self, fps: float, start_frame: int) -> None:
        self.fps = fps
        self.start_frame = start_frame
        self.painted: list[Piece] = []  # in paint order, overlapping
        self.flat = Flat()

    def markers(self, item: otio.core.Item, origin_s: float, lo: float, hi: float,
                clip: otio.schema.Clip | None = None, scalar: float = 1.0) -> None:
        """Hints from `item`'s markers that fall inside [lo, hi) on the record side.

        A clip's markers live in its source time (OTIO's convention). One before the media's
        first frame is also tried counted from that frame (what the FCP7 XML reader gives for
        media with camera timecode), and one that lands outside the clip as a record timecode
        (what Avid EDL locators carry)."""
        first_s = media_start_s(clip) if clip is not None else 0.0
        for marker in item.markers:
            text = foley_text(marker)
            if text is None:
                continue
            t_s = marker.marked_range.start_time.to_seconds()
            candidates = [(t_s - origin_s) / (scalar or 1.0) * self.fps]
            if clip is not None and first_s > 0 and t_s < first_s:
                candidates.append((t_s + first_s - origin_s) / (scalar or 1.0) * self.fps)
            if clip is not None:
                candidates.append(t_s * self.fps - self.start_frame)
            for rec in candidates:
                if lo - 1e-6 <= rec < hi or (rec == lo == hi):
                    self.flat.hints.append(Hint(rec, text, clip))
                    break

    def composition(self, comp: otio.core.Composition, origin_s: float,
                    lo: float, hi: float, scalar: float = 1.0) -> None:
        """Walk `comp`, whose internal time `origin_s` sits at record frame 0, within [lo, hi).

        `scalar`: the speed effects of `comp` and the compositions around it (a clip inside a
        retimed nest plays retimed: its shot is reported as such)."""
        self.markers(comp, origin_s, lo, hi)
        shifts = _midpoint_shifts(comp, self.fps)
        for i, child in enumerate(comp):
            if isinstance(child, otio.schema.Transition) or not child.enabled:
                continue
            if isinstance(child, otio.schema.Track) and child.kind != otio.schema.TrackKind.Video:
                continue
            r = comp.range_of_child_at_index(i)
            c_lo = (r.start_time.to_seconds() - origin_s) * self.fps
            c_hi = c_lo + r.duration.to_seconds() * self.fps
            move_in, move_out = shifts.get(i, (0.0, 0.0))
            a, b = max(c_lo + move_in, lo), min(c_hi + move_out, hi)
            if isinstance(child, otio.schema.Clip):
                self.clip(child, c_lo, a, b, lo, hi, scalar)
            elif isinstance(child, otio.core.Composition) and b > a:
                start_s = child.trimmed_range().start_time.to_seconds()
                self.composition(child, start_s - c_lo / self.fps, a, b,
                                 scalar * _time_scalar(child))

    def clip(self, clip: otio.schema.Clip, c_lo: float, a: float, b: float,
             lo: float, hi: float, outer_scalar: float = 1.0) -> None:
        ref = clip.media_reference
        if isinstance(ref, otio.schema.GeneratorReference) and \
                (ref.generator_kind or "").lower() in BLACK_GENERATORS:
            return
        trimmed = clip.trimmed_range()
        if trimmed.duration.value <= 0:
            if lo <= c_lo <= hi:
                self.flat.zero_length.append((c_lo, clip))
            return
        scalar = outer_scalar * _time_scalar(clip)
        start_s = trimmed.start_time.to_seconds()
        if b > a:
            self.painted.append(Piece(a, b, clip, start_s + (a - c_lo) / self.fps * scalar, scalar))
            self.markers(clip, start_s - c_lo / self.fps * (scalar or 1.0), a, b, clip, scalar)
        metadata = clip.metadata.get("foleyflow")
        if b > a and hasattr(metadata, "get") and isinstance(metadata.get("foley"), str):
            self.flat.hints.insert(0, Hint(None, metadata["foley"].strip(), clip))


def _is_generator(piece: Piece) -> bool:
    return isinstance(piece.clip.media_reference, otio.schema.GeneratorReference)


def _midpoint_shifts(comp: otio.core.Composition, fps: float) -> dict[int, tuple[float, float]]:
    """Record frames by which each child's (start, end) moves to cut at transition midpoints."""
    if not isinstance(comp, otio.schema.Track):
        return {}
    children = list(comp)
    shifts: dict[int, tuple[float, float]] = {}
    for i, child in enumerate(children):
        if not isinstance(child, otio.schema.Transition):
            continue
        half = (child.out_offset.to_seconds() - child.in_offset.to_seconds()) / 2 * fps
        if i > 0:
            start, end = shifts.get(i - 1, (0.0, 0.0))
            shifts[i - 1] = (start, end + half)
        if i + 1 < len(children):
            start, end = shifts.get(i + 1, (0.0, 0.0))
            shifts[i + 1] = (start + half, end)
    return shifts


def _paint(pieces: list[Piece], fps: float) -> list[Piece]:
    """Lay pieces down in order (generators first); a later piece hides what it overlaps."""
    out: list[Piece] = []
    for p in sorted(pieces, key=lambda x: not _is_generator(x)):  # stable: keeps track order
        kept: list[Piece] = []
        for q in out:
            if q.rec_hi <= p.rec_lo or q.rec_lo >= p.rec_hi:
                kept.append(q)
                continue
            if q.rec_lo < p.rec_lo:
                kept.append(q.cut(q.rec_lo, p.rec_lo, fps))
            if q.rec_hi > p.rec_hi:
                kept.append(q.cut(p.rec_hi, q.rec_hi, fps))
        kept.append(p)
        out = sorted(kept, key=lambda x: x.rec_lo)
    return _merge(out)


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Join neighbouring pieces of the same clip that continue each other."""
    merged: list[Piece] = []
    for p in pieces:
        prev = merged[-1] if merged else None
        if prev is not None and prev.clip is p.clip and abs(prev.rec_hi - p.rec_lo) < 1e-6:
            merged[-1] = replace(prev, rec_hi=p.rec_hi)
        else:
            merged.append(p)
    return merged


def visible_picture(timeline: otio.schema.Timeline, fps: float, start_frame: int = 0) -> Flat:
    """The visible clips of `timeline`'s enabled video tracks, top-most winning.

    `start_frame` (the timeline's start timecode in frames) places record-timecode markers."""
    walker = _Walker(fps, start_frame)
    root = timeline.tracks
    origin_s = root.trimmed_range().start_time.to_seconds() if root.source_range else 0.0
    walker.markers(root, origin_s, 0.0, float("inf"))
    for i, track in enumerate(root):
        if not (isinstance(track, otio.schema.Track) and track.enabled
                and track.kind == otio.schema.TrackKind.Video):
            continue
        r = root.range_of_child_at_index(i)
        c_lo = (r.start_time.to_seconds() - origin_s) * fps
        c_hi = c_lo + r.duration.to_seconds() * fps
        walker.flat.extent = max(walker.flat.extent, c_hi)
        start_s = track.trimmed_range().start_time.to_seconds()
        walker.composition(track, start_s - c_lo / fps, max(c_lo, 0.0), c_hi,
                           _time_scalar(root) * _time_scalar(track))
    walker.flat.pieces = _paint(walker.painted, fps)
    return walker.flat
