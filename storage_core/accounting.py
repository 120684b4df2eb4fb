"""The quota split: which of a bucket's three read quotas pays for a read, and which gets a refund back.

A read of ``n`` bytes consumes, in this order (Greenfield v1.10): the month's charged quota, the month's
free quota, then the bucket's one-time free quota. A refund gives back newest first (one-time, then
monthly, then charged), so that refunding ``k`` bytes of a charge of ``n`` leaves exactly what a charge
of ``n - k`` would have consumed. This module is the only definition of that order; charges, refunds
and the read-quota figures on every database use it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Split:
    """How many bytes of one read each quota pays."""

    charged: int = 0
    monthly_free: int = 0
    free: int = 0

    @property
    def total(self) -> int:
        return self.charged + self.monthly_free + self.free

    def __add__(self, other: Split) -> Split:
        return Split(self.charged + other.charged, self.monthly_free + other.monthly_free, self.free + other.free)


@dataclass(frozen=True, slots=True)
class Left:
    """What a bucket has left this month of each quota."""

    charged: int
    monthly_free: int
    free: int

    @classmethod
    def of_month(cls, charged_quota: int, charged_consumed: int, monthly_quota: int, monthly_consumed: int,
                 free_remaining: int) -> Left:
        # a quota lowered below what was consumed leaves nothing, never a negative amount
        return cls(max(charged_quota - charged_consumed, 0), max(monthly_quota - monthly_consumed, 0),
                   max(free_remaining, 0))

    @property
    def total(self) -> int:
        return self.charged + self.monthly_free + self.free

    def after(self, split: Split) -> Left:
        """What is left once ``split`` is consumed."""
        return Left(self.charged - split.charged, self.monthly_free - split.monthly_free, self.free - split.free)

    def restored(self, split: Split) -> Left:
        """What is left once ``split`` is given back."""
        return Left(self.charged + split.charged, self.monthly_free + split.monthly_free, self.free + split.free)


def split_charge(size: int, left: Left) -> Split | None:
    """The split of a read of ``size`` bytes, or None when what is left cannot pay for all of it."""
    if size < 0:
        raise ValueError(f"a read cannot be of {size} bytes")
    charged = min(size, left.charged)
    monthly = min(size - charged, left.monthly_free)
    free = size - charged - monthly
    if free > left.free:
        return None
    return Split(charged, monthly, free)


def split_refund(amount: int, charge: Split) -> Split:
    """The part of ``charge`` that a refund of ``amount`` bytes gives back, newest quota first."""
    amount = max(0, min(amount, charge.total))
    free = min(amount, charge.free)
    monthly = min(amount - free, charge.monthly_free)
    return Split(amount - free - monthly, monthly, free)
