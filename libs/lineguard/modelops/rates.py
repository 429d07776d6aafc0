"""Parts judged against the truth as the line counts them: a bad part passed is an escape, a good part not passed
a false reject. One set of counts and rates for the threshold tune (lineguard.modelops.tune) and the shadow
report (lineguard.modelops.shadow_report)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Rates:
    """Counts of parts whose truth is known, and the two rates (None where there is no part to count)."""

    bad: int
    good: int
    escapes: int
    false_rejects: int

    @property
    def escape_rate(self) -> float | None:
        return self.escapes / self.bad if self.bad else None

    @property
    def false_reject_rate(self) -> float | None:
        return self.false_rejects / self.good if self.good else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "escape_rate": self.escape_rate, "false_reject_rate": self.false_reject_rate}
