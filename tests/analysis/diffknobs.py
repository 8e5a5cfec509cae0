"""The diff's shortcuts, set for one computation: tests compare a shortcut with the
computation it replaces (zonewall/analysis/diffswitches.py: SHARED_PEERS_FROM,
GROUPED_PEERS, REUSE_SAME_SIDES, PEER_CLASSES, ENDPOINT_CLASSES, UNITED_CLASSES,
PEER_TEMPLATES, SHARE_UNNAMED, SHARE_SHAPES, KEEP_AFTER_RULE_EDITS, LEND_STEPS, LEND_CANDIDATES, NARROW_SIDES,
ONLY_DIFFERING, NAMING_INDEX; the functions and classes rule_edits, group_edits
(diffedits.py) and ZoneDelta (diffscope.py); and outside them alignment.PAIRWISE,
kept.KEEP, incremental.NAMING_INDEX)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from zonewall.analysis import diff, diffedits, differ, diffrecord, diffscope, diffswitches

# every module of the diff: a function or class is set wherever a module binds it
# (diffedits imports ZoneDelta from diffscope: both names are replaced)
MODULES: tuple[ModuleType, ...] = (diffswitches, diff, diffscope, diffedits, differ, diffrecord)


def declined(_old: Any, _new: Any) -> None:
    """In place of rule_edits / group_edits: the whole comparison."""
    return None


@contextmanager
def diff_knobs(**values: Any) -> Iterator[None]:
    """`NAME = value` in each diff module that binds NAME, restored afterwards; a
    name no module binds is an error (a knob renamed must not leave a test comparing
    the shortcut with itself)."""
    saved = [(module, name, getattr(module, name)) for name in values for module in MODULES if hasattr(module, name)]
    missing = set(values) - {name for _module, name, _value in saved}
    assert not missing, f"no diff module binds {sorted(missing)}"
    for module, name, _value in saved:
        setattr(module, name, values[name])
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
