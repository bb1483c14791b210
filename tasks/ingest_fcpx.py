"""Read FCPX XML (.fcpxml) as Final Cut Pro X plays it.

Part of `tasks.ingest` (called from `tasks.ingest_formats`). OTIO's fcpx_xml adapter
truncates frame rates and frame counts to integers (23.976 fps read as 23), ignores the
sequence's `tcStart` and knows only asset-clips and compound clips; our reader
(`_ExactFcpx`) does its time arithmetic in exact fractions of the format's `frameDuration`,
starts the reel at `tcStart` (on whose clock the spine's offsets run) and takes drop-frame
from `tcFormat`. Sync-clips show their own trim, multicam clips their
active video angle, disabled clips no picture, and a `timeMap` / scaling `conform-rate`
becomes a LinearTimeWarp (a retimed, skipped shot). A clip before tcStart, or overlapping
the one before it in its storyline, is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio
from otio_fcpx_xml_adapter import fcpx_xml as _fcpx

from tasks.ingest_formats import TimelineError, _frames_label, _timelines_in, rational_rate

_FCPX_STORY = ("asset-clip", "clip", "ref-clip", "sync-clip", "mc-clip", "video", "audio", "gap",
               "title", "caption", "audition")
_FCPX_CONTAINERS = ("clip", "sync-clip")  # their media lies inside them, on their own clock
_FCPX_NO_MEDIA = ("gap", "title", "caption")


def _fcpx_time(value: str | None) -> Fraction:
    """An FCPX time attribute ("3600s", "1001/24000s", "0s") as exact seconds."""
    if value is None:
        return Fraction(0)
    text = value.strip()
    if not text.endswith("s"):
        raise ValueError(f"{value!r} is not an FCPX time (like '3600s' or '1001/24000s')")
    return Fraction(text[:-1])


@dataclass
class _Placed:
    """A story element and where it starts on the clock of the sequence (or clip) holding it."""

    element: Any
    at: Fraction  # seconds on the container's clock (the project's: from tcStart)
    lane: int
    storyline: int  # the items of one storyline follow one another; a connected clip is alone
    top: bool = False  # in the project's primary storyline
    within: tuple[Fraction, Fraction] | None = None  # a clip's own sound: cut to the clip


@dataclass(frozen=True)
class _Retime:
    """A clip's `timeMap` / `conform-rate`: its local time (`start`, markers) → media time."""

    points: tuple[tuple[Fraction, Fraction], ...]  # timeMap (time, value) pairs; () for none
    scalar: Fraction  # media seconds per record second (the speed the shot would be read at)
    linear: bool  # False: the speed varies (ramps, holds, jumps) over the part in use
    origin: Fraction = Fraction(0)  # local time of the map's time 0

    def source(self, t: Fraction) -> Fraction:
        """The media time shown at local time `t` (timeMap points join by straight lines)."""
        pts = self.points
        if not pts:
            return t
        t -= self.origin
        if len(pts) == 1:
            return pts[0][1]
        i = 0
        while i < len(pts) - 2 and pts[i + 1][0] <= t:
            i += 1
        (t0, v0), (t1, v1) = pts[i], pts[i + 1]
        return v1 if t1 == t0 else v0 + (t - t0) * (v1 - v0) / (t1 - t0)

    def effect(self, clip_name: str) -> otio.schema.LinearTimeWarp | None:
        """A LinearTimeWarp for a speed other than 100 %, so the shot is skipped as retimed
        (a varying speed gets the one furthest from 100 % — it must not pass as 100 %)."""
        if self.linear and self.scalar == 1:
            return None
        what = "speed change" if self.linear else "variable speed (timeMap)"
        return otio.schema.LinearTimeWarp(
            name=f"FCPX {what}", time_scalar=float(self.scalar),
            metadata={"foleyflow": {"retime": f"{what} on FCPX clip '{clip_name}'"}})


def _timemap_speeds(points: tuple[tuple[Fraction, Fraction], ...], lo: Fraction,
                    hi: Fraction) -> tuple[list[Fraction], bool]:
    """The speeds of the timeMap segments [lo, hi] passes through (the end ones run on), and
    whether it jumps (two points at one time) inside."""
    speeds, jumps = [], False
    last = len(points) - 2
    for i, ((t0, v0), (t1, v1)) in enumerate(zip(points, points[1:])):
        reaches_lo = i == last or t1 > lo
        reaches_hi = i == 0 or t0 < hi or (t0 == lo == hi)
        if not (reaches_lo and reaches_hi):
            continue
        if t1 == t0:
            jumps = jumps or (v1 != v0 and lo < t0 < hi)
        else:
            speeds.append((v1 - v0) / (t1 - t0))
    return speeds, jumps


class _ExactFcpx(_fcpx.FcpxXml):
    """The OTIO FCPX XML reader, with exact time arithmetic and FCPX's clip kinds read right.

    The adapter computes rates as `int(rate)` and frame counts with `int()` (23.976 fps
    becomes 23, 29.97 becomes 29), ignores `tcStart`, and knows only asset-clips and compound
    clips. Here every time is `seconds × rate` at the exact rate 1 / `frameDuration` of its
    format (a format without one — a still, an audio asset — takes the sequence's rate), and
    the project's timeline starts at `tcStart` with `tcFormat` saying drop-frame
    (`metadata["foleyflow"]`).

    Placement: a primary storyline's `offset`s are on its sequence's clock, which starts at
    `tcStart` (the first clip of a real export sits at offset == tcStart); a connected clip's
    offset is on its parent's clock (the parent's `start` is at the parent's offset), and a
    connected storyline's items follow one another from its own offset. Clips of one
    storyline that overlap, or a primary clip before tcStart, are refused.

    Clip kinds: a sync-clip or clip shows the media inside it, trimmed by its own `start` /
    `duration`; a multicam clip (mc-clip) shows its active video angle (the `mc-source` whose
    srcEnable is all or video) from the `media/multicam` resource; an audition shows its
    active pick. `enabled="0"` gives a disabled OTIO item. A `timeMap` or a scaling
    `conform-rate` becomes a LinearTimeWarp (a speed other than 100 %, which the ingest skips
    with a reason); a varying speed gets the speed furthest from 100 % it reaches."""

    def __init__(self, xml_string: str, path: Path) -> None:
        super().__init__(xml_string)
        self.path = path
        self.rates: dict[str, Fraction] = {}
        self.sequence_rate: Fraction | None = None
        self.drop = False
        self._storylines = 0
        self._assets: dict[str, Any] | None = None

    def rate_of(self, format_id: str | None) -> Fraction:
        if format_id in self.rates:
            return self.rates[format_id]
        fmt = self._format_by_id(format_id) if format_id else None
        duration = fmt.get("frameDuration") if fmt is not None else None
        if duration:
            try:
                seconds = _fcpx_time(duration)
            except (ValueError, ZeroDivisionError):
                seconds = Fraction(0)
            if seconds <= 0:
                raise TimelineError(f"{self.path}: format {format_id!r} has frameDuration "
                                    f"{duration!r}, not a frame duration — re-export the XML")
            self.rates[format_id] = 1 / seconds  # type: ignore[index]
            return self.rates[format_id]  # type: ignore[index]
        if self.sequence_rate is not None:
            return self.sequence_rate
        raise TimelineError(f"{self.path}: the sequence's format {format_id!r} states no "
                            f"frameDuration, so its frame rate is unknown — re-export the XML")

    def time(self, value: str | None, format_id: str | None) -> otio.opentime.RationalTime:
        return self.time_at(_fcpx_time(value), format_id)

    def time_at(self, seconds: Fraction, format_id: str | None) -> otio.opentime.RationalTime:
        rate = self.rate_of(format_id)
        return otio.opentime.RationalTime(float(seconds * rate), float(rate))

    # the adapter's time helpers, exact
    def _format_frame_rate(self, format_id: str | None) -> float:
        return float(self.rate_of(format_id))

    def _number_of_frames(self, time_value: str | None, format_id: str | None) -> float:
        return float(_fcpx_time(time_value) * self.rate_of(format_id))

    def _time_range(self, element: Any, format_id: str | None) -> otio.opentime.TimeRange:
        return otio.opentime.TimeRange(self.time(element.get("start", "0s"), format_id),
                                       self.time(element.get("duration"), format_id))

    def _reference_from_id(self, asset_id: str, default_format: str | None) -> Any:
        """The asset's media: its `src`, or (FCPXML 1.9 on) its original-media `media-rep`."""
        asset = self._asset_by_id(asset_id)
        src = asset.get("src", "") or next(
            (rep.get("src", "") for rep in asset.findall("./media-rep")
             if rep.get("kind", "original-media") == "original-media"), "")
        if not src:
            return otio.schema.MissingReference(name=asset.get("name", ""))
        fmt = asset.get("format", default_format)
        asset_clip = self._assetclip_by_ref(asset_id)
        ref = otio.schema.ExternalReference(
            target_url=src,
            available_range=otio.opentime.TimeRange(self.time(asset.get("start"), fmt),
                                                    self.time(asset.get("duration"), fmt)),
            metadata={"fcpx": self._create_metadta(asset_clip) if asset_clip else {}})
        ref.name = asset.get("name", "")
        return ref

    # --- what each element is ----------------------------------------------------------------

    def _asset_by_id(self, asset_id: str | None) -> Any:
        if self._assets is None:
            self._assets = {a.get("id"): a for a in self.fcpx_xml.findall("./resources/asset")}
        return self._assets.get(asset_id or "")

    def _name(self, element: Any) -> str:
        if element.get("name"):
            return element.get("name")
        asset = self._asset_by_id(element.get("ref")) if element.get("ref") else None
        return asset.get("name", "") if asset is not None and asset.get("name") else element.tag

    def _asset(self, element: Any) -> Any:
        asset = self._asset_by_id(element.get("ref"))
        if asset is None:
            raise TimelineError(f"{self.path}: clip '{self._name(element)}' refers to asset "
                                f"{element.get('ref')!r}, which the file's resources lack — "
                                f"re-export the XML")
        return asset

    def _generator(self, element: Any) -> bool:
        """A `video` of an effect (a solid, a background): no media, like a title."""
        ref = element.get("ref")
        return self._asset_by_id(ref) is None and any(
            effect.get("id") == ref for effect in self.fcpx_xml.findall("./resources/effect"))

    def _duration(self, element: Any) -> Fraction:
        if element.get("duration") is not None:
            return _fcpx_time(element.get("duration"))
        if element.tag == "asset-clip":  # optional there: the rest of the asset
            asset = self._asset(element)
            return (_fcpx_time(asset.get("duration")) + _fcpx_time(asset.get("start"))
                    - _fcpx_time(element.get("start")))
        return Fraction(0)

    def _sound_only(self, element: Any) -> bool:
        """An element without picture: audio, a clip taking only sound from its source, an
        asset without video, a sync-clip / clip holding only sound."""
        if element.tag == "audio" or element.get("srcEnable") == "audio":
            return True
        if element.tag == "asset-clip":
            return self._asset(element).get("hasVideo", "0") == "0"
        if element.tag in _FCPX_CONTAINERS:
            return not any(x.tag == "video" or (x.tag in ("asset-clip", "ref-clip", "mc-clip")
                                                and not self._sound_only(x))
                           for x in element.iter() if x is not element)
        return False

    def _retime(self, element: Any, container_format: str | None) -> _Retime:
        """The element's timeMap (over the part of it in use) and scaling conform-rate."""
        start = _fcpx_time(element.get("start"))
        end = start + self._duration(element)
        points: tuple[tuple[Fraction, Fraction], ...] = ()
        scalar, linear, origin = Fraction(1), True, Fraction(0)
        time_map = element.find("./timeMap")
        if time_map is not None:
            points = tuple(sorted((_fcpx_time(p.get("time")), _fcpx_time(p.get("value")))
                                  for p in time_map.findall("./timept")))
            if len(points) == 1:
                scalar = Fraction(0)  # one point: a hold
            elif points:
                # `time` is on the clip's local clock (the one its `start` is on); a map that
                # misses the clip there but fits it counted from the clip's first frame (time
                # 0 = start) is read that way
                slack = 1 / (2 * self.rate_of(container_format))
                first, last = points[0][0], points[-1][0]
                if (start < first - slack or end > last + slack) and first - slack <= 0 \
                        and end - start <= last + slack:
                    origin = start
                speeds, jumps = _timemap_speeds(points, start - origin, end - origin)
                linear = len(set(speeds)) <= 1 and not jumps
                if not linear and end > start:  # a jump shows in the average speed
                    mapped = _Retime(points, scalar, linear, origin)
                    speeds.append((mapped.source(end) - mapped.source(start)) / (end - start))
                if speeds:
                    scalar = max(speeds, key=lambda s: (abs(s - 1), s))
        conform = element.find("./conform-rate")
        if conform is not None and conform.get("scaleEnabled", "1") != "0" \
                and conform.get("srcFrameRate"):
            num, den = rational_rate(float(conform.get("srcFrameRate")))
            scalar *= self.rate_of(container_format) / Fraction(num, den)
        return _Retime(points, scalar, linear, origin)

    def _format_of(self, element: Any, default_format: str | None) -> str | None:
        """The format of an element's media (its asset's), else the container's."""
        if element.get("ref") and element.tag in ("asset-clip", "video", "audio"):
            return self._asset(element).get("format", default_format)
        return element.get("format") or default_format

    def _add_markers(self, composable: Any, element: Any, to_source: Any,
                     format_id: str | None) -> None:
        """`element`'s markers (on its local clock) on `composable`, in its source time."""
        for m in element.findall("./marker"):
            marker = self._marker(m, format_id)
            marker.marked_range = otio.opentime.TimeRange(
                self.time_at(to_source(_fcpx_time(m.get("start"))), format_id),
                marker.marked_range.duration)
            composable.markers.append(marker)

    # --- the walk: where every story element sits --------------------------------------------

    def _new_storyline(self) -> int:
        self._storylines += 1
        return self._storylines

    def _storyline(self, elements: list[Any], shift: Fraction, lane: int, out: list[_Placed],
                   top: bool = False) -> None:
        """Place one storyline's elements (offsets + `shift` on the container's clock), and
        the clips connected to them."""
        storyline = self._new_storyline()
        for element in elements:
            place = element
            if element.tag == "audition":  # its first child is the active pick
                picks = [c for c in element if c.tag in _FCPX_STORY and c.tag != "audition"]
                if not picks:
                    continue
                if element.get("offset") is None:
                    place = picks[0]
                element = picks[0]
            elif element.tag not in _FCPX_STORY:
                continue  # transitions (FCP centres them on the cut), markers, effects
            at = shift + _fcpx_time(place.get("offset"))
            out.append(_Placed(element, at, lane, storyline, top))
            self._connected(element, at, lane, out)

    def _connected(self, host: Any, host_at: Fraction, lane: int, out: list[_Placed]) -> None:
        """Place the clips and storylines connected to `host` (its children with a lane), and
        the sound inside a sync-clip / clip (cut to the clip: it is the clip's own sound)."""
        base = host_at - _fcpx_time(host.get("start"))
        container = host.tag in _FCPX_CONTAINERS
        bounds = (host_at, host_at + self._duration(host))
        for child in host:
            child_lane = child.get("lane")
            if child_lane is None:
                if container and host.find("./timeMap") is None and \
                        child.tag in ("audio", "asset-clip") and self._sound_only(child) \
                        and not self._sound_only(host):
                    out.append(_Placed(child, base + _fcpx_time(child.get("offset")), lane,
                                       self._new_storyline(), within=bounds))
                continue
            if child.tag == "spine":
                self._storyline(list(child), base + _fcpx_time(child.get("offset")),
                                lane + int(child_lane), out)
            elif child.tag in _FCPX_STORY:
                first = len(out)
                self._storyline([child], base, lane + int(child_lane), out)
                if container and first < len(out) and self._sound_only(child):
                    out[first].within = bounds

    def _inside(self, container: Any) -> list[_Placed]:
        """What a sync-clip / clip holds (its children without a lane), on its own clock."""
        out: list[_Placed] = []
        for child in container:
            if child.get("lane") is not None:
                continue
            if child.tag == "spine":
                self._storyline(list(child), _fcpx_time(child.get("offset")), 0, out)
            elif child.tag in _FCPX_STORY:
                self._storyline([child], Fraction(0), 0, out)  # picture and sound side by side
        return out

    # --- building OTIO items -----------------------------------------------------------------

    def _build_composable(self, element: Any, default_format: str | None) -> Any:
        return self._composable(element, default_format)[0]

    def _composable(self, element: Any, fmt: str | None) -> tuple[Any, bool]:
        """The OTIO item for a story element (None for gaps, titles, no picture), and whether
        it is sound only."""
        tag = element.tag
        if tag in _FCPX_NO_MEDIA or (tag in ("video", "audio") and self._generator(element)):
            return None, False
        sound = self._sound_only(element)
        if tag in ("asset-clip", "video", "audio"):
            retime = self._retime(element, fmt)
            start = retime.source(_fcpx_time(element.get("start")))
            item = self._media_clip(element, fmt, self._name(element), start,
                                    self._duration(element), retime, [(element, retime.source)])
        elif tag == "ref-clip":
            item = self._compound(element, fmt)
        elif tag == "mc-clip":
            item = self._multicam(element, fmt)
        elif sound:  # a sync-clip / clip holding only sound: that sound, trimmed by the clip
            leaf = next((x for x in element.iter() if x.tag in ("audio", "asset-clip")), None)
            if leaf is None:
                return None, True
            retime = self._retime(element, fmt)
            start = retime.source(_fcpx_time(element.get("start")))
            item = self._media_clip(leaf, fmt, self._name(element), start,
                                    self._duration(element), retime, [])
        else:
            item = self._contained(element, fmt, self._inside(element),
                                   element.get("format") or fmt)
        if item is None:
            return None, sound
        if element.get("enabled", "1") == "0":
            item.enabled = False
        return item, sound

    def _media_clip(self, leaf: Any, fmt: str | None, name: str, start: Fraction,
                    duration: Fraction, retime: _Retime,
                    markers: list[tuple[Any, Any]]) -> otio.schema.Clip:
        """A clip of `leaf`'s asset from media time `start`, lasting `duration` on the record
        side; `markers`: (element, its local time → media time)."""
        self._asset(leaf)
        media_format = self._format_of(leaf, fmt)
        clip = otio.schema.Clip(
            name=name, media_reference=self._reference_from_id(leaf.get("ref"), fmt),
            source_range=otio.opentime.TimeRange(self.time_at(start, media_format),
                                                 self.time_at(duration, media_format)))
        effect = retime.effect(name)
        if effect is not None:
            clip.effects.append(effect)
        for element, to_source in markers:
            self._add_markers(clip, element, to_source, media_format)
        return clip

    def _contained(self, element: Any, fmt: str | None, inside: list[_Placed],
                   inner_format: str | None) -> Any:
        """The picture of a sync-clip, clip or multicam clip, whose media (`inside`, on its
        own clock) it shows from its `start` for its `duration`: one clip when a single
        asset covers that, else a nested stack."""
        name = self._name(element)
        retime = self._retime(element, fmt)
        start, duration = _fcpx_time(element.get("start")), self._duration(element)
        first = retime.source(start)
        pictures = [p for p in inside
                    if p.element.tag not in _FCPX_NO_MEDIA and not self._sound_only(p.element)]
        if not pictures:
            return None
        if len(pictures) == 1 and pictures[0].element.tag in ("asset-clip", "video") \
                and pictures[0].lane == 0:
            leaf, half = pictures[0], 1 / (2 * self.rate_of(inner_format))
            leaf_retime = self._retime(leaf.element, inner_format)
            lo, hi = sorted((first, first + duration * retime.scalar))
            if not leaf_retime.points and leaf_retime.scalar == 1:
                # The inner clip maps this clock onto its media (its offset → its start).
                # When it does not reach [lo, hi] but its asset does, the clock is the
                # media's own: OTIO's FCPX writer puts <video offset="0s"> under a clip whose
                # start is a media time.
                shift = _fcpx_time(leaf.element.get("start")) - leaf.at
                asset = self._asset(leaf.element)
                media_lo = _fcpx_time(asset.get("start"))
                media_hi = media_lo + _fcpx_time(asset.get("duration"))
                if not leaf.at - half <= lo <= hi <= leaf.at + self._duration(leaf.element) \
                        + half and media_lo - half <= lo <= hi <= media_hi + half:
                    shift = Fraction(0)
                clip = self._media_clip(
                    leaf.element, inner_format, name, first + shift, duration, retime,
                    [(element, lambda t: retime.source(t) + shift),
                     (leaf.element, lambda t: t)])
                if leaf.element.get("enabled", "1") == "0":
                    clip.enabled = False
                return clip
        stack = self._stack(pictures, inner_format, name=name, where=f" inside '{name}'",
                            source_range=otio.opentime.TimeRange(
                                self.time_at(first, inner_format),
                                self.time_at(duration, inner_format)))
        effect = retime.effect(name)
        if effect is not None:
            stack.effects.append(effect)
        self._add_markers(stack, element, retime.source, inner_format)
        return stack

    def _media(self, element: Any, tag: str, what: str, also: str) -> tuple[Any, Any]:
        """(the `media` resource `element` refers to, its `tag` child); TimelineError naming
        `what` when there is none (`also`: more to do than re-export)."""
        media = self._compound_clip_by_id(element.get("ref"))
        found = media.find(f"./{tag}") if media is not None else None
        if found is None:
            raise TimelineError(f"{self.path}: {what} refers to {element.get('ref')!r}, which "
                                f"is not a {tag} in the file's resources — re-export the "
                                f"XML{also}")
        return media, found

    def _compound(self, element: Any, fmt: str | None) -> otio.schema.Stack:
        """A compound clip (ref-clip): its `media/sequence`, from `start` for `duration`."""
        name = self._name(element)
        media, sequence = self._media(element, "sequence", f"compound clip '{name}'", "")
        inner_format = sequence.get("format") or fmt
        inside: list[_Placed] = []
        spine = sequence.find("./spine")
        self._storyline(list(spine) if spine is not None else [], Fraction(0), 0, inside)
        retime = self._retime(element, fmt)
        start = retime.source(_fcpx_time(element.get("start")))
        stack = self._stack(inside, inner_format, name=media.get("name", name),
                            where=f" inside compound clip '{name}'",
                            source_range=otio.opentime.TimeRange(
                                self.time_at(start, inner_format),
                                self.time_at(self._duration(element), inner_format)))
        effect = retime.effect(name)
        if effect is not None:
            stack.effects.append(effect)
        self._add_markers(stack, element, retime.source, inner_format)
        return stack

    def _multicam(self, element: Any, fmt: str | None) -> Any:
        """A multicam clip: its active video angle, from `start` for `duration` (None when it
        takes only sound)."""
        name = self._name(element)
        media, multicam = self._media(element, "multicam", f"multicam clip '{name}'",
                                      ", or break apart the multicam clip in Final Cut Pro "
                                      "and export again")
        if element.get("srcEnable", "all") == "audio":
            return None
        video = [s.get("angleID") for s in element.findall("./mc-source")
                 if s.get("srcEnable", "all") in ("all", "video")]
        if not video:
            return None
        angle = next((a for a in multicam.findall("./mc-angle")
                      if a.get("angleID") == video[0]), None)
        if angle is None:
            raise TimelineError(f"{self.path}: multicam clip '{name}' shows angle "
                                f"{video[0]!r}, which multicam '{media.get('name', '')}' "
                                f"lacks — re-export the XML, or break apart the multicam clip "
                                f"in Final Cut Pro and export again")
        inside: list[_Placed] = []
        self._storyline(list(angle), Fraction(0), 0, inside)
        return self._contained(element, fmt, inside, multicam.get("format") or fmt)

    # --- lanes into tracks -------------------------------------------------------------------

    def _label(self, seconds: Fraction, rate: Fraction) -> str:
        nominal = max(1, round(rate))
        return _frames_label(max(0, math.floor(seconds * rate + Fraction(1, 2))), nominal,
                             self.drop and rate.denominator == 1001)

    def _check_storylines(self, placed: list[_Placed], rate: Fraction, origin: Fraction,
                          where: str) -> None:
        """Refuse a clip that starts half a frame or more before the one before it in its
        storyline ends, and a primary clip before the sequence's start (tcStart)."""
        half = 1 / (2 * rate)
        last: dict[int, _Placed] = {}
        for p in placed:
            name = self._name(p.element)
            if p.top and p.at < -half:
                raise TimelineError(
                    f"{self.path}: clip '{name}' is at offset {p.element.get('offset')} "
                    f"({self._label(origin + p.at, rate)}), before the sequence starts at its "
                    f"tcStart ({self._label(origin, rate)}) — in a Final Cut Pro or Resolve "
                    f"export the first clip sits at tcStart: re-export the XML")
            before = last.get(p.storyline)
            last[p.storyline] = p
            if before is None:
                continue
            end = before.at + self._duration(before.element)
            if p.at < end - half:
                raise TimelineError(
                    f"{self.path}: clip '{name}' at {self._label(origin + p.at, rate)} "
                    f"overlaps the clip before it in lane {p.lane}{where} "
                    f"('{self._name(before.element)}', which ends at "
                    f"{self._label(origin + end, rate)}) — clips in a storyline follow one "
                    f"another: re-export the XML from the editing system")

    def _stack(self, placed: list[_Placed], fmt: str | None, name: str = "",
               source_range: Any = None, where: str = "",
               origin: Fraction = Fraction(0)) -> otio.schema.Stack:
        """Tracks from placed elements: one per lane (a lane's sound on a track of its own),
        each clip at its place; connected clips that overlap in a lane stack up above."""
        rate = self.rate_of(fmt)
        half = 1 / (2 * rate)
        self._check_storylines(placed, rate, origin, where)
        groups: dict[tuple[int, bool, int], list[tuple[Fraction, Fraction, Any]]] = {}
        for p in placed:
            item, sound = self._composable(p.element, fmt)
            if item is None:
                continue
            at, duration = p.at, self._duration(p.element)
            lo, hi = p.within if p.within is not None else (Fraction(0), None)
            head = max(Fraction(0), lo - at)
            tail = max(Fraction(0), at + duration - hi) if hi is not None else Fraction(0)
            if head or tail:
                if duration - head - tail < half:
                    continue
                _trim(item, head, tail)
                at, duration = at + head, duration - head - tail
            groups.setdefault((p.lane, sound, p.storyline), []).append((at, duration, item))
        for items in groups.values():
            items.sort(key=lambda i: i[0])
        lanes: dict[tuple[int, bool], list[list[Any]]] = {}
        for (lane, sound, _), items in sorted(groups.items(), key=lambda kv: kv[1][0][0]):
            subs = lanes.setdefault((lane, sound), [])
            sub = next((s for s in subs if s[1] <= items[0][0] + half), None)
            if sub is None:
                kind = otio.schema.TrackKind.Audio if sound else otio.schema.TrackKind.Video
                label = f"{lane}/audio" if sound else str(lane)
                sub = [otio.schema.Track(name=label + (f".{len(subs)}" if subs else ""),
                                         kind=kind), Fraction(0)]
                subs.append(sub)
            for at, duration, item in items:
                lead = at - sub[1]
                if lead > 0:
                    sub[0].append(otio.schema.Gap(source_range=otio.opentime.TimeRange(
                        self.time_at(Fraction(0), fmt), self.time_at(lead, fmt))))
                    sub[1] += lead
                sub[0].append(item)
                sub[1] += duration
        stack = otio.schema.Stack(name=name, source_range=source_range)
        for _, subs in sorted(lanes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            for track, _end in subs:
                stack.append(track)
        return stack

    def _from_project(self, project_element: Any) -> otio.schema.Timeline:
        sequence = project_element.find("./sequence")
        if sequence is None:
            raise TimelineError(f"{self.path}: project {project_element.get('name', '')!r} "
                                f"has no sequence — export the project's timeline")
        self.sequence_rate = None
        rate = self.sequence_rate = self.rate_of(sequence.get("format"))
        try:
            start = _fcpx_time(sequence.get("tcStart", "0s"))
        except (ValueError, ZeroDivisionError) as exc:
            raise TimelineError(f"{self.path}: the sequence's tcStart "
                                f"{sequence.get('tcStart')!r} is not a time — re-export the "
                                f"XML") from exc
        self.drop = (sequence.get("tcFormat") or "").strip().upper() == "DF"
        placed: list[_Placed] = []
        spine = sequence.find("./spine")
        self._storyline(list(spine) if spine is not None else [], -start, 0, placed, top=True)
        timeline = otio.schema.Timeline(name=project_element.get("name", ""))
        timeline.tracks = self._stack(placed, sequence.get("format"), origin=start)
        timeline.global_start_time = otio.opentime.RationalTime(float(start * rate),
                                                                float(rate))
        timeline.metadata["foleyflow"] = {"rate": [rate.numerator, rate.denominator],
                                          "drop_frame": self.drop}
        return timeline


def _trim(item: Any, head: Fraction, tail: Fraction) -> None:
    """Cut `head` seconds off the start of a clip or stack and `tail` off its end."""
    sr = item.source_range
    scalar = 1.0
    for fx in item.effects:
        if isinstance(fx, otio.schema.LinearTimeWarp):
            scalar *= fx.time_scalar
    rate = sr.duration.rate
    item.source_range = otio.opentime.TimeRange(
        otio.opentime.RationalTime(sr.start_time.value + float(head) * rate * scalar, rate),
        otio.opentime.RationalTime(sr.duration.value - float(head + tail) * rate, rate))


def read_fcpx(path: Path, text: str) -> Any:
    """Read FCPX XML exactly; refuse it if any time came back at a rate its formats lack."""
    reader = _ExactFcpx(text, path)
    result = reader.to_otio()
    rates = [float(r) for r in reader.rates.values()]
    for tl in ([result] if isinstance(result, otio.schema.Timeline) else
               _timelines_in(result) if isinstance(result, otio.schema.SerializableCollection)
               else []):
        for item in tl.find_children(shallow_search=False):
            sr = getattr(item, "source_range", None)
            if sr is not None and not any(abs(sr.duration.rate - r) < 1e-9 * r for r in rates):
                raise TimelineError(
                    f"{path}: the FCPX reader gave '{item.name}' times at "
                    f"{sr.duration.rate:g} fps, a rate none of the file's formats has, so it "
                    f"cannot be read exactly — export the project as FCP7 XML or AAF instead")
    return result
