"""Spreading an amount of minor units over weighted parts, exactly.

The rule used for every split of money in Kasse (a discount over lines, shipping over VAT rates, a
line's paid amount over its units): each part gets `floor(amount * weight / total_weight)`; the
cents left over go one each to the parts with the largest fractional remainders, ties to the earlier
part. The parts always add up to the amount, and no part exceeds its weight when amount <= total.
"""

from __future__ import annotations

from collections.abc import Sequence


def allocate(amount: int, weights: Sequence[int]) -> list[int]:
    """Split `amount` (>= 0) over `weights` (>= 0) by largest remainder, ties by position."""
    if amount < 0:
        raise ValueError("cannot allocate a negative amount")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    total = sum(weights)
    if amount == 0:
        return [0] * len(weights)
    if total == 0:
        raise ValueError("cannot allocate over weights that are all zero")
    shares = [amount * w // total for w in weights]
    remainders = [amount * w % total for w in weights]
    left = amount - sum(shares)
    # Largest remainder first; on equal remainders the earlier part wins (sorted is stable).
    for index in sorted(range(len(weights)), key=lambda i: -remainders[i])[:left]:
        shares[index] += 1
    return shares


def cumulative_share(amount: int, units: int, of_units: int) -> int:
    """What `units` out of `of_units` are worth when all of them are worth `amount`.

    Rounded down, and exact at the end: refunding units one part at a time adds up to `amount` once
    all `of_units` are counted, whatever the sequence of parts.
    """
    if of_units <= 0 or not 0 <= units <= of_units:
        raise ValueError(f"{units} of {of_units} units")
    return amount * units // of_units
