"""Sticky assignment for experiments: which A/B variant a customer gets, and who is held out.

Both are pure functions of (campaign, customer): a rerun, a crash, a shard on another host or a
``resend`` asks again and gets the same answer, with nothing to store or look up first. The two
draws use different salts, so being held out says nothing about the variant one would have had.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

_SCALE = float(1 << 64)


def _draw(salt: str, campaign: str, customer_id: str) -> float:
    """A number in [0, 1), uniform over customers, fixed for (salt, campaign, customer)."""
    digest = hashlib.blake2b(f"{salt}\0{campaign}\0{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def held_out(campaign: str, customer_id: str, share: float) -> bool:
    """Whether ``customer_id`` is in ``campaign``'s control group of ``share`` (0 to 1)."""
    return share > 0 and _draw("holdout", campaign, customer_id) < share


@dataclass(frozen=True)
class VariantWeights:
    """A campaign's variants by name, with the cumulative share each ends at."""

    names: tuple[str, ...]
    bounds: tuple[float, ...]

    @classmethod
    def of(cls, weighted: Sequence[tuple[str, float]]) -> "VariantWeights":
        """From (name, weight) pairs, in the campaign file's order."""
        total = sum(w for _, w in weighted)
        acc, bounds = 0.0, []
        for _, w in weighted:
            acc += w / total
            bounds.append(acc)
        bounds[-1] = 1.0
        return cls(tuple(n for n, _ in weighted), tuple(bounds))

    def pick(self, campaign: str, customer_id: str) -> str:
        """The variant ``customer_id`` gets in ``campaign``."""
        x = _draw("variant", campaign, customer_id)
        for name, bound in zip(self.names, self.bounds):
            if x < bound:
                return name
        return self.names[-1]
