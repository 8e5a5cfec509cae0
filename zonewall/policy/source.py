"""Read policy YAML files into plain data that remembers where every value came from.

PyYAML's composer gives nodes with positions; we build dicts/lists that carry the
position of themselves, of each key and of each value, so that a validation error on
any path can be reported as file:line:col. Duplicate keys (which PyYAML silently
overwrites) are errors. YAML 1.1's sexagesimal numbers are disabled so an unquoted
MAC address or time stays a string.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from .errors import Loc, PolicyError, Problem, format_path
from .nesting import TooDeep, compose_bounded, tree_depth


class LDict(dict):
    """A mapping that knows where it, its keys and its values are."""

    __slots__ = ("key_locs", "loc", "value_locs")  # a policy has hundreds of thousands
    loc: Loc
    key_locs: dict[Any, Loc]
    value_locs: dict[Any, Loc]

    def flow_text(self) -> str | None:
        """The text of a one-line flow mapping read by the fast reader, which alone
        decides its keys and values (two mappings with the same text are equal
        wherever they stand); None for any other mapping."""
        return None


class LList(list):
    __slots__ = ("loc", "value_locs")
    loc: Loc
    value_locs: list[Loc]


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 base-60 ints/floats (52:54:00:.. stays a string)."""


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same resolvers over libyaml's parser: ~10x faster on large policies. Its
    error messages are terser, so a document it rejects is parsed again by _Loader
    for the message operators see."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers  # shared, so the additions below apply to both
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _loc(file: str, node: yaml.Node) -> Loc:
    return Loc(file, node.start_mark.line + 1, node.start_mark.column + 1)


# Anchors/aliases may reuse a node; every reuse is built again. A "billion laughs"
# document (aliases of aliases of lists) would expand exponentially, so reuse is capped.
ALIAS_BUDGET = 100_000


class _Expansion:
    def __init__(self, may_hold_control: bool = True) -> None:
        self.seen: set[int] = set()
        self.active: set[int] = set()
        self.repeated = 0
        self.may_hold_control = may_hold_control


def _build(file: str, node: yaml.Node, loader: _Loader, problems: list[Problem], path: tuple[object, ...], state: _Expansion | None = None) -> Any:
    state = state if state is not None else _Expansion()
    if id(node) in state.seen:
        state.repeated += 1
        if state.repeated > ALIAS_BUDGET:
            raise PolicyError([Problem(_loc(file, node), format_path(path), f"aliases (*) expand to more than {ALIAS_BUDGET} values; write the data out instead")])
    state.seen.add(id(node))
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in state.active:
            raise PolicyError([Problem(_loc(file, node), format_path(path), "an alias (*) refers to a mapping or list that contains it (recursive data)")])
        if node.tag not in ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
            problems.append(Problem(_loc(file, node), format_path(path), f"unsupported YAML tag {node.tag!r} (write a plain mapping or list)"))
            return None
        state.active.add(id(node))
        try:
            return _build_collection(file, node, loader, problems, path, state)
        finally:
            state.active.discard(id(node))
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and (state.may_hold_control or node.end_mark.line > node.start_mark.line):
        found = _CONTROL.search(value)
        if found:
            problems.append(Problem(_loc(file, node), format_path(path), _control_message(found.group())))
    return value


# Characters no policy string may hold: they would end up in nft comments, log lines,
# the dashboard and terminals (a NUL makes the kernel refuse the whole ruleset; line
# and bidi controls make one text look like another).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
# Only these can put a control character into a one-line scalar: an escape (\0), a raw
# tab or separator, a block scalar (| or >); multi-line scalars are checked always.
_MAY_HOLD_CONTROL = re.compile(r"[\\\t|>\x85\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def _control_message(char: str) -> str:
    name = unicodedata.name(char, "").lower() or {"\x00": "NUL", "\t": "tab", "\n": "line feed", "\r": "carriage return"}.get(char, "a control character")
    return f"U+{ord(char):04X} ({name}) is not allowed in a policy string; write the text on one line without control characters"


def _build_collection(file: str, node: yaml.Node, loader: _Loader, problems: list[Problem], path: tuple[object, ...], state: _Expansion) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = LDict()
        out.loc, out.key_locs, out.value_locs = _loc(file, node), {}, {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem(_loc(file, key_node), format_path(path), "YAML merge keys (<<) are not supported; write the keys out"))
                continue
            key = _build(file, key_node, loader, problems, path, state)
            if isinstance(key, (dict, list)):
                problems.append(Problem(_loc(file, key_node), format_path(path), "a key must be a plain value, not a mapping or list"))
                continue
            if key in out:
                problems.append(
                    Problem(
                        _loc(file, key_node),
                        format_path(path + (key,)),
                        f"duplicate key, first defined at {out.key_locs[key]}",
                    )
                )
                continue
            out.key_locs[key] = _loc(file, key_node)
            out.value_locs[key] = _loc(file, value_node)
            out[key] = _build(file, value_node, loader, problems, path + (key,), state)
        return out
    seq = LList()
    seq.loc, seq.value_locs = _loc(file, node), []
    for index, item in enumerate(node.value):
        seq.value_locs.append(_loc(file, item))
        seq.append(_build(file, item, loader, problems, path + (index,), state))
    return seq


def _text_loc(display: str, text: str, index: int) -> Loc:
    """file:line:col of a character index into `text`."""
    before = text[:index]
    return Loc(display, before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1)


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's terse problem text, with its context and a hint where one helps."""
    problem = exc.problem or exc.context or "unreadable"
    if problem == "but found another document":
        return "invalid YAML: a second document (---) in one file; put it in a file of its own"
    if "'\\t'" in problem:
        return "invalid YAML: a tab character here; YAML is indented with spaces, never tabs"
    message = problem
    if exc.problem and exc.context and exc.context_mark is not None and (
        exc.problem_mark is None or (exc.context_mark.line, exc.context_mark.column) != (exc.problem_mark.line, exc.problem_mark.column)
    ):
        message += f" ({exc.context} started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    if "<block" in problem:
        message += "; check the indentation"
    return f"invalid YAML: {message}"


def _compose(text: str) -> tuple[Any, Any]:
    """(loader, root node): libyaml first, the pure-Python parser for its messages.
    Nesting is bounded before and after (nesting.py: libyaml recurses in C)."""

    def compose() -> tuple[Any, Any]:
        fast = _FastLoader(text)
        try:
            return fast, fast.get_single_node()
        except yaml.YAMLError:
            fast.dispose()
        loader = _Loader(text)  # rejects control characters already
        return loader, loader.get_single_node()

    loader, node = compose_bounded(text, compose, _FastLoader)
    try:
        tree_depth(node)
    except TooDeep:
        loader.dispose()
        raise
    return loader, node


def read_plain(text: str, display: str) -> LDict | None:
    """What _build would make of `text`, if it is in the plain part of YAML that
    fastyaml.py reads about 4x faster; None otherwise (or when the full reader has more
    to say: every problem is reported by the full reader)."""
    from . import fastyaml  # it builds on the LDict and LList above

    return fastyaml.read(text, display, _FastLoader)


def read_file_lenient(path: Path, display: str) -> tuple[Any, list[Problem]]:
    """Parse one YAML file: (data, problems that did not stop the parse). A duplicate
    key (the first value is kept), a merge key or a collection used as a key is such a
    problem: the rest of the file still reads, so later checks can report theirs too.
    Unreadable YAML still raises PolicyError."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8")
        raise PolicyError([Problem(_text_loc(display, good, len(good)), "", f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise PolicyError([Problem(Loc(display, 1, 1), "", f"cannot read: {exc.strerror}")]) from None
    fast = read_plain(text, display)
    if fast is not None:
        return fast, []
    problems: list[Problem] = []
    loader: _Loader | None = None
    try:
        loader, node = _compose(text)
        if node is None:
            return LDict(), []
        if node.tag in ("tag:yaml.org,2002:merge",):
            raise PolicyError([Problem(_loc(display, node), "", "YAML merge keys are not supported")])
        data = _build(display, node, loader, problems, (), _Expansion(_MAY_HOLD_CONTROL.search(text) is not None))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(display, mark.line + 1, mark.column + 1) if mark else Loc(display, 1, 1)
        raise PolicyError([Problem(loc, "", _yaml_message(exc))]) from None
    except yaml.reader.ReaderError as exc:
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        loc = _text_loc(display, text, exc.position)
        raise PolicyError([Problem(loc, "", f"invalid YAML: character {what} is not allowed in YAML text")]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(Loc(display, 1, 1), "", f"invalid YAML: {exc}")]) from None
    except TooDeep as exc:
        loc = Loc(display, exc.mark.line + 1, exc.mark.column + 1) if exc.mark else Loc(display, 1, 1)
        raise PolicyError([Problem(loc, "", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise PolicyError([Problem(Loc(display, 1, 1), "", "invalid YAML: nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, problems


def policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise PolicyError([Problem(Loc(str(path), 1, 1), "", "no *.yaml or *.yml files in this directory")])
        return files
    if not path.exists():
        raise PolicyError([Problem(Loc(str(path), 1, 1), "", "no such file or directory")])
    return [path]


# Top-level keys whose value is a map of named things (merged across files; a name
# defined twice is an error) or a list (concatenated in file order).
NAMED_SECTIONS = ("hosts", "networks", "groups", "services", "filters", "schedules", "zones", "vms")
LIST_SECTIONS = ("global_rules", "host_rules", "nat")
SINGLE_SECTIONS = ("version", "settings")
# Mappings merged key by key across files (a key defined twice is an error naming both).
MERGED_SECTIONS = NAMED_SECTIONS + ("settings",)


def merge_documents_lenient(documents: list[tuple[str, Any]]) -> tuple[LDict, list[Problem]]:
    """Merge per-file documents into one, keeping every value's own position, and the
    problems that did not stop the merge (a name defined twice keeps its first
    definition), for the loader to report with those of the later checks."""
    merged = LDict()
    merged.key_locs, merged.value_locs = {}, {}
    merged.loc = Loc(documents[0][0], 1, 1) if documents else Loc("<policy>", 1, 1)
    problems: list[Problem] = []
    for display, doc in documents:
        if not isinstance(doc, LDict):
            loc = getattr(doc, "loc", Loc(display, 1, 1))
            problems.append(Problem(loc, "", "a policy file must be a mapping of top-level keys (version, zones, vms, ...)"))
            continue
        for key, value in doc.items():
            key_loc = doc.key_locs[key]
            if key in MERGED_SECTIONS and isinstance(value, LDict):
                if key not in merged:
                    section = LDict()
                    section.loc, section.key_locs, section.value_locs = doc.value_locs[key], {}, {}
                    merged[key] = section
                    merged.key_locs[key], merged.value_locs[key] = key_loc, doc.value_locs[key]
                section = merged[key]
                if not isinstance(section, LDict):
                    continue
                for name, item in value.items():
                    if name in section:
                        problems.append(
                            Problem(
                                value.key_locs[name],
                                format_path((key, name)),
                                f"defined twice: also at {section.key_locs[name]}",
                            )
                        )
                        continue
                    section[name] = item
                    section.key_locs[name], section.value_locs[name] = value.key_locs[name], value.value_locs[name]
            elif key in LIST_SECTIONS and isinstance(value, LList):
                if key not in merged:
                    seq = LList()
                    seq.loc, seq.value_locs = doc.value_locs[key], []
                    merged[key] = seq
                    merged.key_locs[key], merged.value_locs[key] = key_loc, doc.value_locs[key]
                target = merged[key]
                if isinstance(target, LList):
                    target.extend(value)
                    target.value_locs.extend(value.value_locs)
            elif key in merged:
                if key == "version" and merged[key] == value:
                    continue
                if key == "version":
                    problems.append(Problem(key_loc, "version", f"version {value!r} here but {merged[key]!r} at {merged.key_locs[key]} (every file must say version: 1)"))
                    continue
                problems.append(Problem(key_loc, str(key), f"defined twice: also at {merged.key_locs[key]}"))
            else:
                merged[key] = value
                merged.key_locs[key], merged.value_locs[key] = key_loc, doc.value_locs[key]
    return merged, problems


def locate(root: Any, path: tuple[object, ...]) -> Loc | None:
    """The position of the value at `path` (or of the deepest existing parent)."""
    node, best = root, getattr(root, "loc", None)
    for part in path:
        if isinstance(node, LDict) and part in node:
            best = node.value_locs.get(part, best)
            node = node[part]
        elif isinstance(node, LList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.value_locs[part]
            node = node[part]
        else:
            break
    return best


def locate_key(root: Any, path: tuple[object, ...]) -> Loc | None:
    """The position of the key at the end of `path` (for 'unknown key' errors)."""
    if not path:
        return getattr(root, "loc", None)
    parent = root
    for part in path[:-1]:
        if (isinstance(parent, LDict) and part in parent) or (isinstance(parent, LList) and isinstance(part, int) and 0 <= part < len(parent)):
            parent = parent[part]
        else:
            return locate(root, path)
    if isinstance(parent, LDict) and path[-1] in parent:
        return parent.key_locs[path[-1]]
    return locate(root, path)
