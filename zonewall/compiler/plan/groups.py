"""Security groups (issue 18): rules written once, referenced from rule lists.

`security_groups: {web: {rules: [...]}}` and `{security_group: web}` in a VM's,
zone's, `global_rules` or host rule list: the group's rules (of the chain's
direction) run in place of the reference, first match wins through them as if
they were written there. A reference may be scoped (`nic:` in a VM's rules,
`interface:` in host rules): then every rule of the group is.

The plan keeps the reference as a GroupCall in its level (`Level.items`): the
compiler renders the group once per node as a chain that every reference jumps to
(Proxmox copies a group into every guest's chain); the analyzer reads the level's
flat steps (`Level.steps`), the group's steps in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Union

from .vocabulary import Scope, Step

Context = Literal["guest", "host"]  # a guest's chain (accept: go on) or a node's (accept: final)


@dataclass(frozen=True)
class GroupCall:
    group: str
    context: Context
    direction: str
    steps: tuple[Step, ...]  # the group's steps in this direction (one tuple per group, shared by every reference)
    label: str  # the reference's id
    ref: object = field(default=None, compare=False)  # policy.resolve.RuleRef of the reference
    scope: Scope | None = None

    def flat(self) -> tuple[Step, ...]:
        """The group's steps as the chain evaluates them (scoped as the reference is)."""
        if self.scope is None:
            return self.steps
        return tuple(replace(step, scope=self.scope) for step in self.steps)


Item = Union[Step, GroupCall]


def flatten(items: tuple[Item, ...]) -> tuple[Step, ...]:
    out: list[Step] = []
    for item in items:
        out += item.flat() if isinstance(item, GroupCall) else (item,)
    return tuple(out)
