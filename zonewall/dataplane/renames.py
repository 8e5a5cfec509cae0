"""Which rules an apply only renamed: counters that follow a rule when its id moves.

A rule's derived id is `file:line`: a line added above it moves the id, and the node
rewrites the rule's chain only to carry the new id (policy-guide.md). The kernel
rules are new (new handles, counters at 0) but say what they said before. Told
nothing, the controller would take the rule under its new id for a new rule, and
give the row of the id it left to whichever rule holds that id now.

So the counter reader compares, chain by chain, what each counted kernel rule says
(its expressions, without its counter's numbers, its comment or its handle) before
and after a generation that rewrote the chain: rules that say the same in the same
order, under other ids, were renamed. A counter whose rule was renamed carries the
id it had (`RuleCounter.was`); the controller moves the row (store/counters.py).

Only unambiguous renames are told: every kernel rule of the new id matched to kernel
rules of one old id, and that old id to no other new one. Anything else (a rule
edited, a rule of several kernel rules of which some changed) is told nothing: the
controller then folds the old id's row into the scope's removed rules, as for a rule
removed. (A `log` rule's counted kernel rule jumps to its log chain, named by the
rule itself: it says the same; the log chain, whose prefix carries the id, counts
nothing.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from difflib import SequenceMatcher

from .counters import Key

# per chain (family, chain name): its counted kernel rules in order, (what the rule
# says, the counter it adds to)
Layout = Mapping[tuple[str, str], Sequence[tuple[bytes, Key]]]


def renamed(before: Layout, after: Layout) -> dict[Key, str]:
    """New counter key -> the rule id its kernel rules had in `before`, for the
    rules `after` only renamed."""
    matched: dict[Key, set[Key]] = {}  # new key -> old keys its kernel rules matched
    unmatched: set[Key] = set()  # new keys with a kernel rule that matched nothing
    claimed_by: dict[Key, set[Key]] = {}  # old key -> new keys it matched
    for chain, new in after.items():
        old = before.get(chain)
        if not old or [key for _, key in old] == [key for _, key in new]:
            continue  # not rewritten, or with its ids as they were
        pairs = _aligned(old, new)
        for position, (_said, key) in enumerate(new):
            old_key = pairs.get(position)
            if old_key is None or old_key[:3] != key[:3]:
                unmatched.add(key)
                continue
            matched.setdefault(key, set()).add(old_key)
            claimed_by.setdefault(old_key, set()).add(key)
    out: dict[Key, str] = {}
    for key, olds in matched.items():
        if key in unmatched or len(olds) != 1:
            continue
        (old_key,) = olds
        if old_key != key and claimed_by[old_key] == {key}:
            out[key] = old_key[3]
    return out


def _aligned(old: Sequence[tuple[bytes, Key]], new: Sequence[tuple[bytes, Key]]) -> dict[int, Key]:
    """Position in `new` -> the key of the rule in `old` that says the same, in order."""
    if len(old) == len(new) and all(a[0] == b[0] for a, b in zip(old, new)):
        return {position: entry[1] for position, entry in enumerate(old)}  # renumbered alone (most chains): no search
    matcher = SequenceMatcher(None, [said for said, _ in old], [said for said, _ in new], autojunk=False)
    pairs: dict[int, Key] = {}
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            pairs[block.b + offset] = old[block.a + offset][1]
    return pairs
