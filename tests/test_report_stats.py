"""The report's statistics, checked against statsmodels, and its verdicts on generated data with a
known effect and with none."""

from __future__ import annotations

import random

import pytest
import statsmodels.stats.power as power
import statsmodels.stats.proportion as statsmodels

from outreach.reporting.stats import compare, diff_interval, ratio_interval, sample_size, z_test

CASES = [(120, 1000, 150, 1000), (30, 412, 31, 388), (5, 90, 19, 110), (900, 10_000, 1010, 10_000)]


@pytest.mark.parametrize("a_hits,a_n,b_hits,b_n", CASES)
def test_intervals_and_p_values_match_statsmodels(a_hits, a_n, b_hits, b_n):
    lo, hi = diff_interval(a_hits, a_n, b_hits, b_n)
    ref = statsmodels.confint_proportions_2indep(b_hits, b_n, a_hits, a_n, method="wald",
                                                 compare="diff", alpha=0.05)
    assert (lo, hi) == pytest.approx(ref, abs=1e-9)
    ratio = ratio_interval(a_hits, a_n, b_hits, b_n)
    ref = statsmodels.confint_proportions_2indep(b_hits, b_n, a_hits, a_n, method="log",
                                                 compare="ratio", alpha=0.05)
    assert ratio == pytest.approx(ref, rel=1e-9)
    _, p = statsmodels.proportions_ztest([b_hits, a_hits], [b_n, a_n])
    assert z_test(a_hits, a_n, b_hits, b_n) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("pa,pb", [(0.10, 0.12), (0.02, 0.025), (0.30, 0.25)])
def test_recipients_needed_agree_with_statsmodels_power(pa, pb):
    """statsmodels sizes with Cohen's h (an arcsine transform); the two agree within a few %."""
    ours = sample_size(pa, pb)
    ref = power.NormalIndPower().solve_power(
        effect_size=statsmodels.proportion_effectsize(pb, pa), alpha=0.05, power=0.8,
        alternative="two-sided")
    assert ours == pytest.approx(ref, rel=0.03)


def _arm(rng: random.Random, p: float, n: int) -> int:
    return sum(rng.random() < p for _ in range(n))


def test_a_known_effect_is_found_in_the_right_direction():
    rng = random.Random(7)
    a, b = _arm(rng, 0.10, 20_000), _arm(rng, 0.12, 20_000)
    c = compare("conversion", "held out", a, 20_000, "treated", b, 20_000)
    assert c.significant and c.diff_ci[0] < 0.02 < c.diff_ci[1]
    assert c.verdict.startswith("treated beats held out on conversion by")
    worse = compare("conversion", "treated", b, 20_000, "held out", a, 20_000)
    assert worse.verdict.startswith("treated beats held out")


def test_no_effect_is_not_claimed_and_says_how_many_more_are_needed():
    rng = random.Random(11)
    a, b = _arm(rng, 0.10, 2_000), _arm(rng, 0.10, 2_000)
    c = compare("conversion", "a", a, 2_000, "b", b, 2_000)
    assert not c.significant
    assert c.verdict.startswith("not yet significant") and c.more_needed
    assert f"about {c.more_needed:,} more recipients needed" in c.verdict


def test_without_an_effect_a_claim_is_as_rare_as_the_level_promises():
    rng = random.Random(3)
    claims = 0
    for _ in range(400):
        a, b = _arm(rng, 0.2, 500), _arm(rng, 0.2, 500)
        claims += compare("click", "a", a, 500, "b", b, 500).significant
    assert claims / 400 <= 0.08  # 5 % expected; 8 % is over 2.5 standard errors away


def test_an_empty_arm_has_no_verdict_but_says_why():
    c = compare("open", "a", 0, 0, "b", 3, 10)
    assert c.diff is None and not c.significant and c.verdict == "no open data yet for a"
