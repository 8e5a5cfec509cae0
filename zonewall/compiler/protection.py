"""The PROTECTION stage (plan/protection.py) as nft rules.

Each step's matches drop through a chain of its own, `protect-<what>` (the NFLOG
record with settings.log.denied, a counter, the drop), so one counter shows what
each protection dropped. synflood's steps count SYNs per source in one dynamic
set per family (`synflood-v4`, `-v6`), shared by the node's input and its guests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..policy.addresses import FAMILIES
from . import nftexpr as x
from .ir import Chain, Rule
from .matches import match_statements
from .meters import per_source_meter
from .naming import LOG_LIMIT, log_prefix
from .plan.vocabulary import NewConnection, Step

if TYPE_CHECKING:
    from .levels import CompileContext



def protection_rules(ctx: CompileContext, steps: tuple[Step, ...], scope: str) -> list[Rule]:
    """`scope`: `in` (the node's input) or `guests` (its guests' connections); it only
    names the NFLOG records."""
    rules: list[Rule] = []
    for step in steps:
        target = _drop_chain(ctx, step, scope)
        condition = [x.match(x.ct("state"), "new", "in")] if isinstance(step.condition, NewConnection) else []
        for match in step.matches or ():
            statements = condition + match_statements(ctx.registry, match)
            if step.limit is None:
                rules.append(Rule((*statements, x.goto(target)), step.label))
                continue
            for family in FAMILIES if match.family is None else (match.family,):
                meter = per_source_meter(ctx.meters, step.label.split(":")[-1], family, step.limit, f"{step.label}: per source")
                nfproto = [x.match(x.meta("nfproto"), family)] if match.family is None else []
                rules.append(Rule((*nfproto, *statements, meter, x.goto(target)), step.label))
    return rules


def _drop_chain(ctx: CompileContext, step: Step, scope: str) -> str:
    name = f"protect-{step.label.split(':')[-1]}-{scope}"
    if name not in ctx.extra_chains:
        rules = []
        if ctx.policy.doc.settings.log.denied:
            prefix = log_prefix(ctx.node, "protection", scope, step.label, "drop", ctx.log_level)
            rules.append(Rule((x.limit_ref(LOG_LIMIT), x.log_group(ctx.log_group, prefix)), step.label))
        rules.append(Rule((x.counter(), x.drop()), step.label))
        ctx.extra_chains[name] = Chain(name, tuple(rules), comment=f"{step.label}: dropped")
    return name
