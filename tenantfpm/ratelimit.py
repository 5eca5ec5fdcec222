"""A token bucket, pure: how many bytes of a tenant's output the master may read now.

The master reads workers' stdout/stderr on its one loop. Past the bucket, it
stops reading that worker's pipe until tokens return; the pipe fills and the
writer blocks, so a flooding tenant slows itself, not the master or its
neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float  # tokens (bytes) per second; 0 = unlimited
    burst: float  # most tokens held at once
    tokens: float = -1.0  # -1: full at the first look
    at: float = 0.0

    def available(self, now: float) -> int:
        """Whole tokens there now (refilled since the last look)."""
        if self.rate <= 0:
            return 1 << 30
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        if self.rate > 0:
            self.tokens -= n

    def wait(self, want: int = 4096) -> float:
        """Seconds until `want` tokens are there (at least a little, never spinning)."""
        if self.rate <= 0:
            return 0.0
        return max(0.05, (min(want, self.burst) - self.tokens) / self.rate)
