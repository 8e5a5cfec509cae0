"""Per-source token buckets: a dynamic set keyed by the source address.

Used by a rule's `limit: {per: source}` (new connections), `packet_limit: {per:
source}` and protection.synflood: each source address gets its own bucket, an
element that expires once the source has been quiet for a refill period.
"""

from __future__ import annotations

from ..policy.addresses import Family
from . import nftexpr as x
from .ir import NamedSet
from .matches import IP_PROTO
from .plan.vocabulary import RateLimit
from .stmt import SetUpdate

RATE_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def per_source_meter(meters: dict[str, NamedSet], prefix: str, family: Family, limit: RateLimit, comment: str) -> SetUpdate:
    """Registers the set `PREFIX-v4`/`-v6` in `meters`; returns the update statement
    (it matches within the rate; with `limit.over`, beyond it)."""
    name = f"{prefix}-{'v4' if family == 'ipv4' else 'v6'}"
    timeout = max(60, RATE_SECONDS[limit.per] * max(1, limit.burst) // max(1, limit.rate) + RATE_SECONDS[limit.per])
    meters[name] = NamedSet(
        name=name,
        type="ipv4_addr" if family == "ipv4" else "ipv6_addr",
        flags=("timeout",),  # nft 1.0.6 JSON rejects "dynamic"; `update` works with timeout
        timeout=timeout,
        size=65535,
        comment=comment,
    )
    return x.meter_update(name, x.payload(IP_PROTO[family], "saddr"), limit.rate, limit.per, limit.burst, over=limit.over)
