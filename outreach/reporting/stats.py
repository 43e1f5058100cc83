"""Comparing two proportions: the difference and the ratio with confidence intervals, and a verdict
in plain words.

Normal-approximation (Wald) interval for the difference, the log (Katz) interval for the ratio and
the pooled two-sided z test: the textbook methods, checked against statsmodels in the tests. A
verdict claims an effect only when the interval of the difference excludes zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

#: Confidence level of every interval, and the power the "recipients needed" estimate aims for.
LEVEL = 0.95
POWER = 0.80


@dataclass
class Comparison:
    """Group B against group A on one rate: ``b/nb`` against ``a/na``."""

    metric: str
    a_name: str
    a_hits: int
    a_n: int
    b_name: str
    b_hits: int
    b_n: int
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None
    ratio: float | None = None
    ratio_ci: tuple[float, float] | None = None
    p_value: float | None = None
    significant: bool = False
    more_needed: int | None = None
    verdict: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "metric": self.metric,
            "a": {"name": self.a_name, "hits": self.a_hits, "n": self.a_n,
                  "rate": _rate(self.a_hits, self.a_n)},
            "b": {"name": self.b_name, "hits": self.b_hits, "n": self.b_n,
                  "rate": _rate(self.b_hits, self.b_n)},
            "difference": self.diff, "difference_ci": self.diff_ci,
            "relative": None if self.ratio is None else self.ratio - 1,
            "relative_ci": None if self.ratio_ci is None else (self.ratio_ci[0] - 1,
                                                               self.ratio_ci[1] - 1),
            "p_value": self.p_value, "significant": self.significant,
            "more_needed": self.more_needed, "verdict": self.verdict,
        }


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def diff_interval(a_hits: int, a_n: int, b_hits: int, b_n: int,
                  level: float = LEVEL) -> tuple[float, float]:
    """Wald interval of ``pb - pa``."""
    pa, pb = a_hits / a_n, b_hits / b_n
    z = NormalDist().inv_cdf(0.5 + level / 2)
    se = math.sqrt(pa * (1 - pa) / a_n + pb * (1 - pb) / b_n)
    d = pb - pa
    return d - z * se, d + z * se


def ratio_interval(a_hits: int, a_n: int, b_hits: int, b_n: int,
                   level: float = LEVEL) -> tuple[float, float] | None:
    """Log (Katz) interval of ``pb / pa``; None when either group has no hit."""
    if a_hits == 0 or b_hits == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    ratio = (b_hits / b_n) / (a_hits / a_n)
    se = math.sqrt(1 / b_hits - 1 / b_n + 1 / a_hits - 1 / a_n)
    return ratio * math.exp(-z * se), ratio * math.exp(z * se)


def z_test(a_hits: int, a_n: int, b_hits: int, b_n: int) -> float:
    """Two-sided p-value of the pooled z test of equal proportions."""
    pooled = (a_hits + b_hits) / (a_n + b_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a_n + 1 / b_n))
    if se == 0:
        return 1.0
    z = (b_hits / b_n - a_hits / a_n) / se
    return 2 * (1 - NormalDist().cdf(abs(z)))


def sample_size(pa: float, pb: float, level: float = LEVEL, power: float = POWER) -> float | None:
    """Recipients per group for a two-sided test at ``level`` to detect ``pa`` against ``pb`` with
    ``power``; None when the two are equal (no difference to detect)."""
    d = abs(pb - pa)
    if d == 0:
        return None
    nd = NormalDist()
    za, zb = nd.inv_cdf(0.5 + level / 2), nd.inv_cdf(power)
    p = (pa + pb) / 2
    n = (za * math.sqrt(2 * p * (1 - p)) + zb * math.sqrt(pa * (1 - pa) + pb * (1 - pb))) ** 2
    return n / d ** 2


def compare(metric: str, a_name: str, a_hits: int, a_n: int, b_name: str, b_hits: int,
            b_n: int) -> Comparison:
    """B against A on ``metric``, with intervals and the verdict."""
    c = Comparison(metric, a_name, a_hits, a_n, b_name, b_hits, b_n)
    if a_n == 0 or b_n == 0:
        c.verdict = f"no {metric} data yet for {a_name if a_n == 0 else b_name}"
        return c
    pa, pb = a_hits / a_n, b_hits / b_n
    c.diff = pb - pa
    c.diff_ci = diff_interval(a_hits, a_n, b_hits, b_n)
    if a_hits:
        c.ratio = pb / pa
        c.ratio_ci = ratio_interval(a_hits, a_n, b_hits, b_n)
    c.p_value = z_test(a_hits, a_n, b_hits, b_n)
    lo, hi = c.diff_ci
    c.significant = lo > 0 or hi < 0
    points = f"{abs(c.diff) * 100:.2f} points ({lo * 100:+.2f} to {hi * 100:+.2f}, {LEVEL:.0%} CI)"
    if c.significant:
        better, worse = (b_name, a_name) if c.diff > 0 else (a_name, b_name)
        c.verdict = f"{better} beats {worse} on {metric} by {points}"
        return c
    n = sample_size(pa, pb)
    if n is None:
        c.verdict = (f"not yet significant: no difference in {metric} seen so far "
                     f"({a_n + b_n:,} recipients)")
        return c
    c.more_needed = max(0, math.ceil(2 * n) - (a_n + b_n))
    if c.more_needed == 0:  # enough recipients to see such a difference, and it is not there
        c.verdict = (f"not significant: the difference of {abs(c.diff) * 100:.2f} points in "
                     f"{metric} is within chance at {a_n + b_n:,} recipients")
        return c
    c.verdict = (f"not yet significant: about {c.more_needed:,} more recipients needed to tell a "
                 f"difference of {abs(c.diff) * 100:.2f} points in {metric}")
    return c
