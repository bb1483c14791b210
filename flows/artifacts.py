"""What names become in Prefect UI artifacts: their keys, and text inside their markdown.

Reel and shot names come from editors' timelines — accents, spaces, `|`, `*`, brackets —
while a Prefect artifact key may hold only lowercase ASCII letters, digits and dashes (any
other key is refused, and the artifact with it), and markdown reads `|` as a table cell's end
and `*`, `_`, `[` as formatting.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

# What would end a table cell, open a link, code span, emphasis or HTML tag mid-line. Not
# `_`: inside a word it emphasizes nothing, and names like `R1_v3` would read `R1\_v3` in a
# chat tool that shows the webhook's text without rendering backslash escapes.
MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|])")


def artifact_key(name: str) -> str:
    """`name` as an artifact key: accents dropped, every other run of characters a dash
    (`Reel 1` → `reel-1`). A name that is not plain ASCII also gets 8 hex digits of its hash,
    so reels whose names differ only there (`Scène 12`, `Scene 12`, two names in Japanese)
    keep their own artifacts."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    key = re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")
    if not name.isascii() or not key:
        key = f"{key}-{hashlib.sha256(name.encode()).hexdigest()[:8]}".strip("-")
    return key


def md(text: object) -> str:
    """`text` shown as itself in markdown (in a table cell too): its special characters
    escaped, line breaks as spaces."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))
