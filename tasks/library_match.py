"""Matching a Foley hint ("footsteps gravel", "a heavy wooden door slams") to indexed sounds.

Token overlap with light stemming against material, category, action and caption, plus a bonus
for the category of the event kind; one category/material group is returned so round robin
stays on one surface.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from tasks.library import LibrarySound, words as _words

KIND_CATEGORY = {"step": "footsteps", "impact": "impacts", "scrape": "movement",
                 "whoosh": "whooshes"}
KIND_TEXTURE = {"scrape": "scrape"}  # the sustained bed under events of this kind; else rustle
_ALIASES = {"footstep": "step", "footfall": "step", "walk": "step", "stomp": "step",
            "wooden": "wood", "metallic": "metal", "steel": "metal", "iron": "metal",
            "stony": "stone", "rock": "stone", "glassy": "glass", "slam": "close", "shut": "close",
            "impact": "hit", "knock": "hit", "bang": "hit", "thud": "hit", "strike": "hit",
            "swish": "whoosh", "swoosh": "whoosh", "woosh": "whoosh", "clothes": "cloth",
            "fabric": "cloth", "skid": "scrape", "drag": "scrape", "bush": "foliage",
            "leaf": "foliage", "leave": "foliage"}
_STOPWORDS = {"a", "an", "the", "on", "of", "in", "into", "through", "with", "and", "at",
              "to", "by", "from", "some", "something", "sound", "sounds", "loop"}
_WEIGHTS = (("material", 3.0), ("category", 2.0), ("action", 2.0), ("caption", 1.0))
KIND_BONUS = 1.5
MIN_VARIANTS = 3


def canon(word: str) -> str:
    """Light stemming plus aliases: footsteps~footstep~step, wooden~wood, slams~close."""
    w = word.lower()
    if w in _ALIASES:
        return _ALIASES[w]
    for suffix in ("ing", "ed", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            if suffix == "es" and not re.search(r"(sh|ch|x|ss|z)es$", w):
                continue
            if suffix == "s" and w.endswith("ss"):
                break
            w = w[: -len(suffix)]
            if suffix in ("ing", "ed") and re.search(r"([bdgmnpt])\1$", w):
                w = w[:-1]  # hitting → hit, stepped → step
            break
    w = _ALIASES.get(w, w)
    return w[:-1] if w.endswith("e") and len(w) > 3 else w  # rustle~rustling, scrape~scraping


def _tokens(text: str | None) -> set[str]:
    return {canon(w) for w in _words(text or "") if w not in _STOPWORDS and not w.isdigit()}


def _score(sound: LibrarySound, hint: set[str], bonus_tokens: set[str],
           bonus_category: str | None) -> float:
    fields_ = {name: _tokens(getattr(sound, name)) for name, _ in _WEIGHTS}
    score = sum(max((w for name, w in _WEIGHTS if h in fields_[name]), default=0.0)
                for h in hint)
    if bonus_category is not None and sound.category == bonus_category:
        score += KIND_BONUS
    if bonus_tokens & set().union(*fields_.values()):
        score += KIND_BONUS
    return score


def _best_group(scored: list[tuple[float, LibrarySound]], limit: int) -> list[LibrarySound]:
    """The top-scoring sounds, kept to one category/material so round robin stays coherent.

    When that group has fewer than MIN_VARIANTS sounds, the top-scoring sounds of the same
    category join it (a few related variations beat one sound repeated).
    """
    scored = [(s, x) for s, x in scored if s > 0]
    if not scored:
        return []
    top = max(s for s, _ in scored)
    groups: dict[tuple[str, str], list[LibrarySound]] = {}
    for s, sound in scored:
        if s == top:
            groups.setdefault((sound.category, sound.material), []).append(sound)
    key = min(groups, key=lambda k: (-len(groups[k]), k))
    chosen = groups[key]
    if len(chosen) < MIN_VARIANTS:
        chosen = [x for k, g in groups.items() if k[0] == key[0] for x in g]
    return sorted(chosen, key=lambda x: (x.material != key[1], x.rel_path))[:limit]


def match_sounds(sounds: Sequence[LibrarySound], hint: str | None, kind: str, *,
                 limit: int = 8) -> list[LibrarySound]:
    """One-shots for events of `kind` ("step", "impact", "scrape", "whoosh") given a hint.

    Score: each hint word found in material (3), category or action (2), caption (1); the
    category of the event kind adds 1.5, so the hint decides and the kind breaks ties or
    stands in when there is no hint. Returns up to `limit` sounds of the best
    category/material for round robin, or [] when nothing matches.
    """
    hint_tokens = _tokens(hint)
    category = KIND_CATEGORY.get(kind)
    scored = [(_score(s, hint_tokens, set(), category), s) for s in sounds if s.kind == "oneshot"]
    return _best_group(scored, limit)


def match_texture(sounds: Sequence[LibrarySound], hint: str | None, kind: str | None = None,
                  *, limit: int = 4) -> list[LibrarySound]:
    """Textures for the sustained part of a shot: scrape under scrapes, cloth rustle otherwise."""
    hint_tokens = _tokens(hint)
    bonus = {canon(KIND_TEXTURE.get(kind or "", "rustle"))}
    scored = [(_score(s, hint_tokens, bonus, None), s) for s in sounds if s.kind == "texture"]
    return _best_group(scored, limit)
