"""Measured rates with exact binomial confidence intervals, and how a bound is held by them.

Every error rate of the harness is ``k`` events in ``n`` independent simulated cases. Its interval
is the Clopper-Pearson ("exact") interval (Clopper & Pearson, *Biometrika* 26, 1934), computed by
:meth:`scipy.stats.binomtest` ``.proportion_ci(method="exact")``.

A documented bound is held *statistically*, never on an exact count: a rate whose target is "at most
``b``" fails only when its whole interval lies above ``b`` (:meth:`Rate.above`); a rate whose target
is "at least ``b``" fails only when its whole interval lies below ``b`` (:meth:`Rate.below`). At a
confidence ``c`` (the gate's checks use 99%, the guard's and the trigger's 95%) a policy that
truly meets its bound fails in at most about ``(1 - c) / 2`` of seeds, and a policy far off its
bound fails at any seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest


@dataclass(frozen=True)
class Rate:
    """``k`` events in ``n`` cases, with its Clopper-Pearson interval.

    Attributes:
        k: events (e.g. promotions of a challenger worse by the margin).
        n: cases simulated (> 0).
        confidence: level of ``ci_low``..``ci_high`` (e.g. 0.95).
        ci_low, ci_high: the interval, shares in [0, 1].
    """

    k: int
    n: int
    confidence: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, k: int, n: int, confidence: float = 0.95) -> Rate:
        """The rate of ``k`` events in ``n`` cases.

        Raises:
            ValueError: ``n`` is not positive or ``k`` is outside ``0..n``.
        """
        if n <= 0 or not 0 <= k <= n:
            raise ValueError(f"a rate needs 0 <= k <= n and n > 0; got k={k}, n={n}")
        ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
        return cls(int(k), int(n), confidence, float(ci.low), float(ci.high))

    @property
    def rate(self) -> float:
        return self.k / self.n

    def above(self, bound: float) -> bool:
        """Whether the rate is statistically above ``bound`` (its whole interval is)."""
        return self.ci_low > bound

    def below(self, bound: float) -> bool:
        """Whether the rate is statistically below ``bound`` (its whole interval is)."""
        return self.ci_high < bound

    def text(self) -> str:
        """``3.1% [2.0, 4.6] (6/194)``: the rate, its interval in percent and the counts."""
        return (
            f"{self.rate:.1%} [{100 * self.ci_low:.1f}, {100 * self.ci_high:.1f}] "
            f"({self.k}/{self.n})"
        )

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready ``{k, n, rate, ci_low, ci_high, confidence}``."""
        return {
            "k": self.k,
            "n": self.n,
            "rate": round(self.rate, 6),
            "ci_low": round(self.ci_low, 6),
            "ci_high": round(self.ci_high, 6),
            "confidence": self.confidence,
        }
