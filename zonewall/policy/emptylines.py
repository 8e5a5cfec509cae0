"""Whether empty lines added or removed at one place change nothing but positions.

A node's documents change by an empty line when a rule line is added to a VM on
another node (policy/scope.py keeps positions: the other VM's rules block is empty
lines there), and an agent that took that for an unknown edit loaded its documents
whole (~2 s of CPU and a peak of ~200 MiB at 10,000 VMs, on every node).

Outside scalars, YAML does not count empty lines. Inside one it does: a block
scalar keeps them (and a `|+` or `>+` one keeps trailing ones), a multi-line quoted
or plain scalar folds each into a line break. So the edit is taken as a move of
lines only when the text shows no scalar can hold the place: no block scalar
indicator anywhere, no line leaving a quote open (and no backslash, which could
escape a quote), and the first line with content after the place is one no plain
scalar can continue into (a comment, a line holding ": " or ending in ":", or none).
"""

from __future__ import annotations

import re

_BLOCK_INDICATOR = re.compile(r"[|>][-+0-9]*[ \t]*(?:#[^\n]*)?$", re.MULTILINE)
_OPEN_DOUBLE = re.compile(r'^[^"\n]*"(?:[^"\n]*"[^"\n]*")*[^"\n]*$', re.MULTILINE)  # an odd number of `"` on a line
_OPEN_SINGLE = re.compile(r"^[^'\n]*'(?:[^'\n]*'[^'\n]*')*[^'\n]*$", re.MULTILINE)


def _has_block_scalar(text: str) -> bool:
    for found in _BLOCK_INDICATOR.finditer(text):
        at = found.start()
        if at == 0 or text[at - 1] in " \t\n:-?,[{":
            return True
    return False


def outside_scalars(text: str, after: str | None) -> bool:
    """Whether an empty line added or removed in `text` (after which the first line
    with content is `after`, None: none) lies outside every scalar (module docstring).
    A quote, `|` or `>` anywhere it is not needed only sends the edit to a whole load."""
    if "\\" in text or _has_block_scalar(text) or _OPEN_DOUBLE.search(text) or _OPEN_SINGLE.search(text):
        return False
    # a plain scalar never holds ": " nor ends in ":", and a comment ends one
    return after is None or after.lstrip().startswith("#") or ": " in after or after.rstrip().endswith(":")


def first_filled_line(text: str, at: int) -> str | None:
    """The first line with content (not only spaces) from offset `at` on (None: none)."""
    while at < len(text):
        end = text.find("\n", at)
        end = len(text) if end < 0 else end
        if text[at:end].strip():
            return text[at:end]
        at = end + 1
    return None
