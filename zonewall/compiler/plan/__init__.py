"""The evaluation plan: what a policy means, derived once, read by every consumer.

A policy and a node give one plan (`Plan`): for every place a packet is evaluated
(a VM's `in`/`out`, a network's guest-to-guest check, the node's input and output)
the ordered steps, each with its match primitives and verdict. The compiler renders
the plan to nftables (compiler/levels.py, compiler/node.py); the analyzer turns the
same plan into regions of packet space (analysis/regions.py); lint walks it. The
meaning of every policy key lives here and only here (plan/rules.py: a rule's keys;
plan/chains.py: the order of levels; plan/vocabulary.py: the closed vocabulary the
two renderings interpret).
"""

from __future__ import annotations

from datetime import datetime

from ...policy.resolve import Policy
from .chains import ChainPlanner
from .rules import RulePlanner


class Plan:
    """The plan of a policy: its pieces built on demand, memoised, each a pure
    function of its inputs (so a consumer pays only for what it asks about)."""

    def __init__(self, policy: Policy, *, now: datetime | None = None, timezone: str | None = None):
        self.policy = policy
        self.rules = RulePlanner(policy, now, timezone)
        self.chains = ChainPlanner(policy, self.rules)
