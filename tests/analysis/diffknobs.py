"""The diff's shortcuts, set for one computation: tests compare a shortcut with the
computation it replaces (zonewall/analysis/diff.py: rule_edits, group_edits,
_ZoneDelta, SHARED_PEERS_FROM, GROUPED_PEERS, REUSE_SAME_SIDES, PEER_CLASSES, ENDPOINT_CLASSES, UNITED_CLASSES, PEER_TEMPLATES,
SHARE_UNNAMED, NARROW_SIDES,
ONLY_DIFFERING, NAMING_INDEX; and outside it alignment.PAIRWISE, kept.KEEP, incremental.NAMING_INDEX)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from zonewall.analysis import diff as diff_module


def declined(_old: Any, _new: Any) -> None:
    """In place of rule_edits / group_edits: the whole comparison."""
    return None


@contextmanager
def diff_knobs(**values: Any) -> Iterator[None]:
    """`diff_module.NAME = value` for each, restored afterwards."""
    saved = {name: getattr(diff_module, name) for name in values}
    for name, value in values.items():
        setattr(diff_module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(diff_module, name, value)
