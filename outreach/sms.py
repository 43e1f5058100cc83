"""Counting SMS segments the way carriers bill them.

Text that fits the GSM 03.38 alphabet is sent as GSM-7: 160 septets in one segment, 153 per segment
once it is split (the rest holds the concatenation header); the extension characters (``€ [ ] { } ^ ~
\\ |``) take two septets each. Anything else (Armenian, Azerbaijani ``ə``, emoji) forces UCS-2: 70
UTF-16 code units in one segment, 67 per segment when split, and a character outside the Basic
Multilingual Plane takes two. Splitting never cuts an escape sequence or a surrogate pair in two.
"""

from __future__ import annotations

from dataclasses import dataclass

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class SegmentCount:
    """How a text is encoded and how many segments it takes."""

    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def _gsm_units(text: str) -> list[int] | None:
    try:
        return [len(ch.encode("gsm03.38")) for ch in text]
    except UnicodeEncodeError:
        return None


def _pack(units: list[int], single: int, multi: int) -> int:
    total = sum(units)
    if total == 0:
        return 1
    if total <= single:
        return 1
    segments, used = 1, 0
    for size in units:
        if used + size > multi:
            segments += 1
            used = 0
        used += size
    return segments


def count_segments(text: str) -> SegmentCount:
    """Encoding, units and segments of ``text`` (an empty text still costs one segment)."""
    gsm = _gsm_units(text)
    if gsm is not None:
        return SegmentCount("GSM-7", sum(gsm), _pack(gsm, GSM7_SINGLE, GSM7_MULTI))
    ucs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SegmentCount("UCS-2", sum(ucs), _pack(ucs, UCS2_SINGLE, UCS2_MULTI))


def segment_problems(body: str, max_segments: int | None) -> list[str]:
    """A channel's ``check_rendered`` for a ``max_segments`` campaign option: the problem, if any."""
    count = count_segments(body)
    if max_segments and count.segments > max_segments:
        return [f"the text takes {count.segments} {count.encoding} segments, more than "
                f"max_segments = {max_segments}"]
    return []
