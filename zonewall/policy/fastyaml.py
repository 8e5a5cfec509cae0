"""A fast reader for the plain YAML policies are written in; the full one for the rest.

`source.read_file_lenient` composes YAML with libyaml and builds positioned dicts and lists
from its nodes: about 1 us of Python per node plus the composer's own, 9 s of CPU for a
10,000-VM policy (2.8 million nodes; docs/performance.md). Policies are written in a
small part of YAML: block mappings and sequences of plain or quoted one-line scalars
and one-line flow collections (`- {direction: in, action: accept, tcp: 22}`). This
module reads exactly that part a line at a time with regular expressions, and returns
what `source._build` would have built from libyaml's nodes: the same dicts and lists,
the same scalar values (resolved and constructed by the same loader, once per distinct
text), the same positions.

It declines (returns None) on anything else: anchors, tags, block scalars, multi-line
scalars or flow collections, quoted keys, escapes, tabs, control characters, a key
without a value, an indentation it did not expect, and on everything the full reader
reports as a problem (duplicate keys, merge keys). The full reader then reads the file
and gives its usual answer and messages; so this module never decides whether a policy
is valid, only how fast a valid-looking one is read. tests/policy/test_fastyaml.py
holds it equal to the full reader on generated documents and on every policy in the
repository, the broken ones included.

Positions stay numbers until someone asks for them (`_LDict`, `_LList`): a 10,000-VM
policy has 2.4 million of them and the checks look at a few hundred thousand.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import Loc
from .nesting import MAX_DEPTH
from .source import LDict, LList

_STR = "tag:yaml.org,2002:str"
_CONSTRUCTED = frozenset(
    {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"}
)

# Plain scalars: a conservative alphabet both YAML readers agree on. In flow context
# `,[]{}` end them; `:` is part of one only when more of its characters follow
# (`group:admins`, `fd00::1`, `08:00`), and so are spaces. Written as runs of a
# character class (no per-character alternatives: these patterns read every rule).
_FIRST = r"(?:[A-Za-z0-9_./+~(]|-(?=[A-Za-z0-9_./+~(]))"
_FLOW_CHARS = r"[A-Za-z0-9_./@+=%~()-]"
_BLOCK_CHARS = r"[A-Za-z0-9_./@+=%~()'\",\[\]{}-]"
_FLOW_PLAIN = rf"{_FIRST}{_FLOW_CHARS}*(?::+{_FLOW_CHARS}+| +{_FLOW_CHARS}+)*"
_BLOCK_PLAIN = rf"{_FIRST}{_BLOCK_CHARS}*(?::+{_BLOCK_CHARS}+| +{_BLOCK_CHARS}+)*"
_DQ = r'"[^"\\\n]*"'
_SQ = r"'[^'\n]*'(?!')"
_SCALAR = rf"(?:{_DQ}|{_SQ}|{_FLOW_PLAIN})"
_KEY = r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*"

_BLOCK_KEY = re.compile(rf"({_KEY}):(?: +|$)")
_TAIL = re.compile(r" *$| +#.*$")
_BLOCK_VALUE = re.compile(rf"({_DQ}|{_SQ}|{_BLOCK_PLAIN})(?: *$| +#.*$)")


def _flow_mapping(value: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(a one-line flow mapping whose values match `value`, checked whole by one match;
    its pairs (spaces, key, ": ", value, spaces), whose lengths give the positions, for
    findall)."""
    return (
        re.compile(rf"\{{(?: *{_KEY}: +{value} *,)* *{_KEY}: +{value} *\}}"),
        re.compile(rf"( *)({_KEY})(: +)({value})( *)[,}}]"),
    )


# The common case, a flow mapping of scalars; the next most common, values that are
# scalars or flow sequences of scalars (`tcp: [22, 443]`): a second pattern, so the
# first stays cheap.
_SIMPLE_FLOW_MAPPING, _FLOW_PAIRS = _flow_mapping(_SCALAR)
_SIMPLE_SEQUENCE = rf"\[(?: *{_SCALAR} *,)* *(?:{_SCALAR} *)?\]"
_LISTS_FLOW_MAPPING, _FLOW_PAIRS_WITH_LISTS = _flow_mapping(rf"(?:{_SCALAR}|{_SIMPLE_SEQUENCE})")
_SEQUENCE_ITEMS = re.compile(rf"( *)({_SCALAR})( *)[,\]]")
# one `key: scalar` of a flow mapping with what follows it (`,` or `}`)
_FLOW_PAIR = re.compile(rf"( *)({_KEY}): +({_SCALAR}) *([,}}])")
_FLOW_KEY = re.compile(rf" *({_KEY}): +")
_FLOW_SCALAR = re.compile(rf" *({_SCALAR}) *([,}}\]])")
_FLOW_SEPARATOR = re.compile(r" *([,}\]])")
_EMPTY = re.compile(r"[\[{] *([\]}])")
# control characters, tabs, YAML's other line breaks (NEL, U+2028/9), BOMs, non-BMP
_UNSUPPORTED = re.compile(r"[^\n\x20-\x7e\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]")


class _Decline(Exception):
    """Outside the subset: the full reader takes the file."""


class _LDict(LDict):
    """An LDict whose positions are (line, column) pairs until first asked for."""

    __slots__ = ("_at", "_file", "_key_at", "_locs", "_value_at")

    def __init__(self, file: str, at: tuple[int, int]) -> None:
        super().__init__()
        self._file, self._at, self._locs = file, at, None
        self._key_at: list[tuple[int, int]] = []
        self._value_at: list[tuple[int, int]] = []

    def _positions(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self._key_at, self._value_at

    def _materialised(self) -> tuple[dict[Any, Loc], dict[Any, Loc]]:
        if self._locs is None:
            keys, values = self._positions()
            file = self._file
            self._locs = ({k: Loc(file, *at) for k, at in zip(self, keys)}, {k: Loc(file, *at) for k, at in zip(self, values)})
        return self._locs

    @property
    def loc(self) -> Loc:
        return Loc(self._file, *self._at)

    @property
    def key_locs(self) -> dict[Any, Loc]:
        return self._materialised()[0]

    @property
    def value_locs(self) -> dict[Any, Loc]:
        return self._materialised()[1]


class _FlowLDict(_LDict):
    """A one-line flow mapping of scalars: only its text is kept, and positions are
    worked out from it when asked for (most never are). Few objects per rule also
    means little for the garbage collector to walk, ever after."""

    __slots__ = ("_inside", "_pattern")

    def __init__(self, file: str, at: tuple[int, int], inside: str, pattern: re.Pattern[str]) -> None:
        LDict.__init__(self)
        self._file, self._at, self._locs, self._inside, self._pattern = file, at, None, inside, pattern

    def flow_text(self) -> str:
        return self._inside

    def _positions(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        line, column = self._at[0], self._at[1] + 1  # after the `{`
        keys, values = [], []
        for before, key, colon, value, after in self._pattern.findall(self._inside):
            column += len(before)
            keys.append((line, column))
            column += len(key) + len(colon)
            values.append((line, column))
            column += len(value) + len(after) + 1
        return keys, values


class _LList(LList):
    __slots__ = ("_at", "_file", "_locs", "_value_at")

    def __init__(self, file: str, at: tuple[int, int]) -> None:
        super().__init__()
        self._file, self._at, self._locs = file, at, None
        self._value_at: list[tuple[int, int]] = []

    def _positions(self) -> list[tuple[int, int]]:
        return self._value_at

    @property
    def loc(self) -> Loc:
        return Loc(self._file, *self._at)

    @property
    def value_locs(self) -> list[Loc]:
        if self._locs is None:
            self._locs = [Loc(self._file, *at) for at in self._positions()]
        return self._locs


class _FlowLList(_LList):
    """A one-line flow sequence of scalars; positions worked out when asked for."""

    __slots__ = ("_inside",)

    def __init__(self, file: str, at: tuple[int, int], inside: str) -> None:
        LList.__init__(self)
        self._file, self._at, self._locs, self._inside = file, at, None, inside

    def _positions(self) -> list[tuple[int, int]]:
        line, column = self._at[0], self._at[1] + 1  # after the `[`
        out = []
        for before, item, after in _SEQUENCE_ITEMS.findall(self._inside):
            column += len(before)
            out.append((line, column))
            column += len(item) + len(after) + 1
        return out


class _SequenceAt:
    """A flow sequence inside a `_RuleLine`: its items, its column after the mapping's."""

    __slots__ = ("inside", "items", "offset")

    def __init__(self, items: tuple[Any, ...], offset: int, inside: str) -> None:
        self.items, self.offset, self.inside = items, offset, inside


class _RuleLine:
    """A one-line flow mapping read once, to be copied wherever the same text stands:
    its pairs in the order written; a value that is a flow sequence is kept as its
    items, its text and its column relative to the mapping's, so that each copy gets
    a sequence of its own at its own place."""

    __slots__ = ("inside", "pairs", "pattern", "sequences")

    def __init__(self, first: _FlowLDict) -> None:
        self.inside, self.pattern = first._inside, first._pattern
        column = first._at[1]
        self.sequences = any(isinstance(value, _FlowLList) for value in first.values())
        self.pairs: dict[Any, Any] = {
            key: _SequenceAt(tuple(value), value._at[1] - column, value._inside) if isinstance(value, _FlowLList) else value
            for key, value in first.items()
        }

    def copy_at(self, file: str, at: tuple[int, int]) -> _FlowLDict:
        node = _FlowLDict(file, at, self.inside, self.pattern)
        if not self.sequences:
            dict.update(node, self.pairs)
            return node
        line, column = at
        for key, value in self.pairs.items():
            if isinstance(value, _SequenceAt):
                sequence = _FlowLList(file, (line, column + value.offset), value.inside)
                list.extend(sequence, value.items)
                value = sequence
            dict.__setitem__(node, key, value)
        return node


class _Tokens(dict):
    """Scalar token (quotes included) -> its value; each distinct token is resolved once,
    and the hits are dict lookups made from C (map(tokens.__getitem__, ...))."""

    def __init__(self, loader_class: type[Any]) -> None:
        super().__init__()
        self.loader = loader_class("")

    def __missing__(self, token: str) -> Any:
        if token[0] == '"' or token[0] == "'":
            value: Any = token[1:-1]
        else:
            tag = self.loader.resolve(yaml.ScalarNode, token, (True, False))
            if tag == _STR:
                value = token
            elif tag in _CONSTRUCTED:
                value = self.loader.construct_object(yaml.ScalarNode(tag, token), deep=True)
            else:
                raise _Decline  # merge keys, `=`: the full reader reports them
        self[token] = value
        return value


def read(text: str, file: str, loader_class: type[Any]) -> LDict | None:
    """The document as source._build builds it, or None (the full reader's turn).
    `loader_class` resolves and constructs scalars, as it does for the full reader."""
    if not text or text[0] not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ #\n" or _UNSUPPORTED.search(text):
        return None
    try:
        return _Reader(text, file, loader_class).document()
    except (_Decline, IndexError, ValueError, yaml.YAMLError):
        return None


class _Reader:
    def __init__(self, text: str, file: str, loader_class: type[Any]) -> None:
        self.file = file
        # (line number, indentation, text after it) of the lines that are not blank or comments
        self.lines: list[tuple[int, int, str]] = [
            (number, len(line) - len(content), content)
            for number, line in enumerate(text.split("\n"), 1)
            if (content := line.lstrip(" ")) and content[0] != "#"
        ]
        self.tokens = _Tokens(loader_class)
        # a sequence item written as a one-line flow mapping (`- {direction: in, ...}`:
        # a rule, nearly always; nat entries and the like too) -> what it was first read
        # as, and once met again, its `_RuleLine`: the same rules are written for many VMs
        # (80 % of a synthetic policy's rule lines), and a line met again is copied, not
        # matched again (a line met once costs only its entry here)
        self.rule_lines: dict[str, _FlowLDict | _RuleLine] = {}
        self.depth = 0  # collections open around the one being read: past MAX_DEPTH the full reader decides

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH - 2:  # (a rule's one-line mapping and its lists are not counted: 2 more)
            raise _Decline  # the full reader decides, and nesting.py refuses it with its position

    def document(self) -> LDict:
        if not self.lines or self.lines[0][1] != 0:
            raise _Decline
        node, position = self.mapping(0, 0)
        if position != len(self.lines):
            raise _Decline
        return node

    def plain(self, text: str) -> Any:
        return self.tokens[text]

    scalar = plain  # a token with its quotes

    # -- block collections -------------------------------------------------------------

    def block(self, position: int) -> tuple[Any, int]:
        _number, indent, text = self.lines[position]
        if text[0] == "-" and (len(text) == 1 or text[1] == " "):
            return self.sequence(position, indent)
        return self.mapping(position, indent)

    def mapping(self, position: int, indent: int) -> tuple[LDict, int]:
        self._enter()
        lines, count = self.lines, len(self.lines)
        number, _, _ = lines[position]
        node = _LDict(self.file, (number, indent + 1))
        key_at, value_at = node._key_at, node._value_at
        while position < count:
            number, line_indent, text = lines[position]
            if line_indent != indent:
                if line_indent > indent:
                    raise _Decline
                break
            match = _BLOCK_KEY.match(text)
            if match is None:
                raise _Decline
            key = self.plain(match.group(1))
            if key in node:
                raise _Decline  # a duplicate key: the full reader reports it
            rest = match.end()
            position += 1
            if rest < len(text) and text[rest] != "#":
                value, at = self.inline(text, rest, number, indent)
            elif position < count and lines[position][1] > indent:
                at = (lines[position][0], lines[position][1] + 1)
                value, position = self.block(position)
            elif position < count and lines[position][1] == indent and lines[position][2][:2] == "- ":
                at = (lines[position][0], indent + 1)
                value, position = self.sequence(position, indent)
            else:
                raise _Decline  # an empty value (null): its position is libyaml's business
            node[key] = value
            key_at.append((number, indent + 1))
            value_at.append(at)
        self.depth -= 1
        return node, position

    def sequence(self, position: int, indent: int) -> tuple[LList, int]:
        self._enter()
        lines, count = self.lines, len(self.lines)
        number, _, _ = lines[position]
        node = _LList(self.file, (number, indent + 1))
        value_at = node._value_at
        while position < count:
            number, line_indent, text = lines[position]
            if line_indent != indent:
                if line_indent > indent:
                    raise _Decline
                break
            if text[:2] != "- ":
                break
            item = text[2:].lstrip(" ")
            column = indent + len(text) - len(item)  # 0-based column of the item
            if item[:1] == "{":  # the common case, a rule: straight to the flow mapping
                seen = self.rule_lines.get(item)
                if seen is not None:
                    if not isinstance(seen, _RuleLine):  # met once before: worth keeping now
                        seen = self.rule_lines[item] = _RuleLine(seen)
                    node.append(seen.copy_at(self.file, (number, column + 1)))
                    value_at.append((number, column + 1))
                    position += 1
                    continue
                # (without a `[` only the first pattern can match; with one, only the second)
                if "[" in item:
                    simple, pattern = _LISTS_FLOW_MAPPING.match(item), _FLOW_PAIRS_WITH_LISTS
                else:
                    simple, pattern = _SIMPLE_FLOW_MAPPING.match(item), _FLOW_PAIRS
                if simple is not None and _TAIL.match(item, simple.end()) is not None:
                    first = self.simple_flow_mapping(item[1:simple.end()], (number, column + 1), pattern)
                    self.rule_lines[item] = first
                    node.append(first)
                    value_at.append((number, column + 1))
                    position += 1
                    continue
            if not item or item[0] == "#" or item[:2] == "- " or item == "-":
                raise _Decline
            if _BLOCK_KEY.match(item):  # `- key: value`: a mapping at the item's column
                lines[position] = (number, column, item)
                value, position = self.mapping(position, column)
                node.append(value)
                value_at.append((number, column + 1))
                continue
            value, at = self.inline(text, len(text) - len(item), number, indent)
            node.append(value)
            value_at.append(at)
            position += 1
        self.depth -= 1
        return node, position

    def inline(self, text: str, start: int, number: int, indent: int) -> tuple[Any, tuple[int, int]]:
        """The value that fills the rest of a line from `start` (plus a comment)."""
        at = (number, indent + start + 1)
        if text[start] in "{[":
            value, end = self.flow(text, start, number, indent)
            if _TAIL.match(text, end) is None:
                raise _Decline
            return value, at
        match = _BLOCK_VALUE.match(text, start)
        if match is None:
            raise _Decline
        return self.scalar(match.group(1)), at

    # -- flow collections (one line) --------------------------------------------------

    def simple_flow_mapping(self, inside: str, at: tuple[int, int], pattern: re.Pattern[str] = _FLOW_PAIRS) -> LDict:
        """The flow mapping at `at` whose text after `{` (through `}`) is `inside`,
        known to be `key: scalar` (or `key: [scalars]`, `pattern`) pairs: built by C
        loops, positions left for later."""
        pairs = pattern.findall(inside)
        node = _FlowLDict(self.file, at, inside, pattern)
        _, keys, _, values, _ = zip(*pairs)
        get = self.tokens.__getitem__
        if "[" in inside:  # a value is a sequence (or a quoted `[`): each built with its position
            line, column = at[0], at[1] + 1  # after the `{`, as _FlowLDict._positions counts
            built = []
            for before, key, colon, value, after in pairs:
                column += len(before) + len(key) + len(colon)
                built.append(get(value) if value[0] != "[" else self.simple_flow_sequence(value, (line, column)))
                column += len(value) + len(after) + 1
            dict.update(node, zip(map(get, keys), built))
        else:
            dict.update(node, zip(map(get, keys), map(get, values)))
        if len(node) != len(keys):
            raise _Decline  # a duplicate key
        return node

    def simple_flow_sequence(self, text: str, at: tuple[int, int]) -> LList:
        inside = text[1:]
        node = _FlowLList(self.file, at, inside)
        list.extend(node, map(self.tokens.__getitem__, [item for _, item, _ in _SEQUENCE_ITEMS.findall(inside)]))
        return node

    def flow(self, text: str, start: int, number: int, indent: int) -> tuple[Any, int]:
        """The flow collection opening at text[start]; (value, index after it)."""
        self._enter()
        found = self._flow(text, start, number, indent)
        self.depth -= 1
        return found

    def _flow(self, text: str, start: int, number: int, indent: int) -> tuple[Any, int]:
        base = indent + 1  # column of text[0]
        empty = _EMPTY.match(text, start)
        if text[start] == "{":
            simple = _SIMPLE_FLOW_MAPPING.match(text, start) if text.find("[", start) < 0 else None  # (a `[` would fail it)
            if simple is not None:
                return self.simple_flow_mapping(text[start + 1:simple.end()], (number, base + start)), simple.end()
            simple = _LISTS_FLOW_MAPPING.match(text, start)
            if simple is not None:
                return self.simple_flow_mapping(text[start + 1:simple.end()], (number, base + start), _FLOW_PAIRS_WITH_LISTS), simple.end()
            node: Any = _LDict(self.file, (number, base + start))
            if empty is not None:
                if empty.group(1) != "}":
                    raise _Decline
                return node, empty.end()
            key_at, value_at = node._key_at, node._value_at
            position = start + 1
            while True:
                match = _FLOW_PAIR.match(text, position)
                if match is not None:
                    key = self.plain(match.group(2))
                    if key in node:
                        raise _Decline
                    node[key] = self.scalar(match.group(3))
                    key_at.append((number, base + match.start(2)))
                    value_at.append((number, base + match.start(3)))
                    position = match.end()
                    if match.group(4) == "}":
                        return node, position
                    continue
                match = _FLOW_KEY.match(text, position)
                if match is None:
                    raise _Decline
                key = self.plain(match.group(1))
                if key in node:
                    raise _Decline
                position = match.end()
                if text[position] not in "{[":
                    raise _Decline
                value, position = self.flow(text, position, number, indent)
                key_at.append((number, base + match.start(1)))
                value_at.append((number, base + match.end()))
                node[key] = value
                close = _FLOW_SEPARATOR.match(text, position)
                if close is None or close.group(1) == "]":
                    raise _Decline
                position = close.end()
                if close.group(1) == "}":
                    return node, position
        node = _LList(self.file, (number, base + start))
        if empty is not None:
            if empty.group(1) != "]":
                raise _Decline
            return node, empty.end()
        value_at = node._value_at
        position = start + 1
        while True:
            while text[position] == " ":
                position += 1
            if text[position] in "{[":
                item_start = position
                value, position = self.flow(text, position, number, indent)
                close = _FLOW_SEPARATOR.match(text, position)
                if close is None:
                    raise _Decline
            else:
                close = _FLOW_SCALAR.match(text, position)
                if close is None:
                    raise _Decline
                item_start = close.start(1)
                value = self.scalar(close.group(1))
                close_kind = close.group(2)
                node.append(value)
                value_at.append((number, base + item_start))
                position = close.end()
                if close_kind == "]":
                    return node, position
                if close_kind != ",":
                    raise _Decline
                continue
            node.append(value)
            value_at.append((number, base + item_start))
            position = close.end()
            if close.group(1) == "]":
                return node, position
            if close.group(1) != ",":
                raise _Decline
