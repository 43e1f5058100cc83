"""SMS segments counted as carriers bill them: GSM-7 160/153, UCS-2 70/67."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from outreach.sms import count_segments, segment_problems


def test_gsm7_boundaries():
    assert count_segments("a" * 160).segments == 1
    assert count_segments("a" * 161).segments == 2
    assert count_segments("a" * 306).segments == 2
    assert count_segments("a" * 307).segments == 3
    assert count_segments("a").encoding == "GSM-7"


def test_extension_characters_take_two_septets():
    assert count_segments("€" * 80).units == 160
    assert count_segments("€" * 80).segments == 1
    assert count_segments("€" * 81).segments == 2
    # An escape pair is never split across segments: 152 septets + one euro → the euro moves.
    assert count_segments("a" * 152 + "€" + "a" * 10).segments == 2


def test_armenian_and_azerbaijani_are_ucs2():
    hy = "Շնորհակալություն"  # 16 letters
    assert count_segments(hy).encoding == "UCS-2"
    assert count_segments("ə").encoding == "UCS-2"
    assert count_segments("ա" * 70).segments == 1
    assert count_segments("ա" * 71).segments == 2
    assert count_segments("ա" * 134).segments == 2
    assert count_segments("ա" * 135).segments == 3


def test_characters_outside_the_bmp_take_two_units_and_are_not_split():
    assert count_segments("😀" * 35).segments == 1
    assert count_segments("😀" * 36).segments == 2
    assert count_segments("a" + "😀" * 33 + "a").units == 68


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .,!?", max_size=1000))
def test_gsm_text_segment_count_matches_the_formula(text):
    n = len(text)
    expected = 1 if n <= 160 else -(-n // 153)
    assert count_segments(text).segments == expected


@given(st.text(min_size=1, max_size=600))
def test_any_text_fits_its_segments(text):
    c = count_segments(text)
    single, multi = (160, 153) if c.encoding == "GSM-7" else (70, 67)
    assert c.units <= (single if c.segments == 1 else c.segments * multi)
    assert c.segments == 1 or c.units > single


def test_segment_problems_names_the_count_and_the_limit():
    assert segment_problems("a" * 160, 1) == []
    assert segment_problems("ա" * 71, 1) == [
        "the text takes 2 UCS-2 segments, more than max_segments = 1"]
    assert segment_problems("ա" * 71, None) == []
