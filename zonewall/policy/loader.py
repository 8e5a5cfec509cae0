"""Load a policy (a file or a directory of files) into a validated, resolved Policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..gcpause import collector_paused
from .errors import PolicyError, Problem, format_path, more_problems
from .model import FieldProblem, PolicyDocument
from .plain import plain_document
from .resolve import Checker, Policy
from .source import LDict, LList, locate, locate_key, merge_documents_lenient, policy_files, read_file_lenient

TOP_LEVEL_KEYS = tuple(PolicyDocument.model_fields)


@collector_paused(long_lived=True)  # 4x: the collector walked the growing document again and again
def load_policy(path: str | Path) -> Policy:
    """Parse, validate and resolve; raise PolicyError listing every problem."""
    root = Path(path)
    files = policy_files(root)
    base = root if root.is_dir() else root.parent
    documents = []
    problems: list[Problem] = []  # problems later checks can still run past (`check` reports every kind at once)
    unreadable = False
    for file in files:
        display = str(file.relative_to(base)) if root.is_dir() else str(file)
        try:
            data, found = read_file_lenient(file, display)
        except PolicyError as exc:
            problems += exc.problems
            unreadable = True
            continue
        documents.append((display, data))
        problems += found
    if unreadable or any(not isinstance(data, LDict) for _, data in documents):  # nothing to check past
        _, found = merge_documents_lenient(documents)
        raise PolicyError(bounded(problems + found))
    merged, found = merge_documents_lenient(documents)
    return validate_data(merged, problems + found)


@collector_paused(long_lived=True)
def load_policy_text(text: str, name: str = "policy.yaml") -> Policy:
    """Load a policy from a string (tests, API uploads)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        # lone surrogates are written as such, so reading reports "not UTF-8" at them
        file.write_bytes(text.encode("utf-8", "surrogatepass"))
        data, problems = read_file_lenient(file, name)
    if not isinstance(data, LDict):
        raise PolicyError(problems + merge_documents_lenient([(name, data)])[1])
    merged, found = merge_documents_lenient([(name, data)])
    return validate_data(merged, problems + found)


# A document can hold hundreds of thousands of mistakes (300,000 unknown keys took 70 s
# to explain one by one); the first ones are what an operator can act on.
MAX_REPORTED = 1000


def bounded(problems: list[Problem], total: int | None = None) -> list[Problem]:
    """The first MAX_REPORTED problems, and one line saying how many more there are."""
    total = len(problems) if total is None else total
    if total <= MAX_REPORTED:
        return problems
    return problems[:MAX_REPORTED] + [more_problems(total - MAX_REPORTED, MAX_REPORTED)]


def validate_data(data: LDict, earlier: list[Problem] | None = None) -> Policy:
    """`earlier`: problems of reading and merging that did not stop them; reported
    together with the schema's, or else with the cross-reference checks'."""
    earlier = earlier or []
    seen = {problem.loc for problem in earlier}

    def consequences_dropped(found: list[Problem], total: int | None = None) -> list[Problem]:  # the same place again (a dropped value is "null")
        kept = earlier + [problem for problem in found if problem.loc not in seen]
        return bounded(kept, None if total is None else len(kept) + total - len(found))

    try:
        doc = PolicyDocument.model_validate(plain_document(data))
    except ValidationError as exc:
        errors = exc.errors()
        raise PolicyError(consequences_dropped([_problem(data, error) for error in errors[:MAX_REPORTED]], len(errors))) from None
    checker = Checker(doc, data)
    problems = checker.run()
    if problems or earlier:
        raise PolicyError(consequences_dropped(problems))
    # The checks built most of the policy's indexes (every rule with its id and
    # position, address sets): hand over that instance rather than a fresh one that
    # would rebuild them on first use.
    policy = checker.policy
    policy.build_indexes()
    return policy


def _source_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Map pydantic's error path onto the YAML document's path.

    Pydantic adds segments the YAML does not have: the tag of a discriminated union
    (`nat[0].dnat.listen`) and the `members` of a group written as a plain list.
    """
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, LList) and isinstance(part, str):
            continue  # e.g. group written as list, pydantic says ...members
        if isinstance(node, LDict) and part not in node and isinstance(part, str) and part in ("masquerade", "snat", "dnat", "members"):
            continue
        out.append(part)
        if (isinstance(node, LDict) and part in node) or (isinstance(node, LList) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _problem(data: LDict, error: Any) -> Problem:
    path = _source_path(data, tuple(error["loc"]))
    kind = error["type"]
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem) and cause.missing:  # shown at the mapping that lacks the key
        return Problem(locate(data, path), format_path(path + cause.path), message)
    if isinstance(cause, FieldProblem):
        path = _extend(data, path, cause.path)
    if path and path[-1] == "[key]":  # a name used as a mapping key (vms: {Web1: ...})
        path = path[:-1]
        return Problem(
            locate_key(data, path),
            format_path(path),
            f"{_shown(error.get('input'))} is not a valid name (expected lowercase letters, digits, - and _, starting with a letter or digit, at most 31 characters)",
        )
    if kind == "extra_forbidden":
        parent = _parent_keys(path, data)
        expected = f" (expected one of: {', '.join(parent)})" if parent else ""
        return Problem(locate_key(data, path), format_path(path), f"unknown key `{path[-1]}`{expected}")
    if kind == "missing":
        return Problem(locate(data, path[:-1]), format_path(path), f"missing required key `{path[-1]}`")
    if kind == "literal_error":
        message = f"got {_shown(error.get('input'))}; {message[0].lower()}{message[1:]}"
    elif kind == "string_pattern_mismatch" and path and isinstance(path[-1], str):
        message = f"{error.get('input')!r} is not valid here ({_pattern_hint(path)})"
    elif kind == "string_pattern_mismatch":
        message = f"{error.get('input')!r} is not a valid name (expected lowercase letters, digits, - and _, starting with a letter or digit, at most 31 characters)"
    elif kind in ("dict_type", "list_type", "model_type", "model_attributes_type"):
        expected = {"dict_type": "a mapping", "list_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping"}[kind]
        message = f"expected {expected}, got {_describe(error.get('input'))}"
    elif kind == "union_tag_invalid":
        path += ("type",)
        message = f"got {_shown((error.get('ctx') or {}).get('tag'))}; expected `type` to be one of masquerade, snat, dnat"
    elif kind == "union_tag_not_found":
        return Problem(locate(data, path), format_path(path + ("type",)), "missing required key `type` (expected masquerade, snat or dnat)")
    elif message.startswith(("Input should", "String should")):  # pydantic's own words: add what was found
        message = f"got {_shown(error.get('input'))}; {message[0].lower()}{message[1:]}"
    return Problem(locate(data, path), format_path(path), message)


def _extend(data: Any, path: tuple[Any, ...], more: tuple[Any, ...]) -> tuple[Any, ...]:
    """`path` + the parts of `more` that exist in the source (a list key may be written
    as a single value, then its [index] is dropped)."""
    node: Any = data
    for part in path:
        node = node[part] if isinstance(node, (LDict, LList)) and _has(node, part) else None
    for part in more:
        if not (isinstance(node, (LDict, LList)) and _has(node, part)):
            break
        path, node = path + (part,), node[part]
    return path


def _shown(value: Any) -> str:
    """A value for an error message: short, and never a whole mapping."""
    if value is None or isinstance(value, (dict, list)):
        return _describe(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pattern_hint(path: tuple[Any, ...]) -> str:
    key = path[-1]
    if key == "mac":
        return "expected a MAC address like 52:54:00:00:01:01"
    if key in ("bridge", "uplink", "tap"):
        return "expected an interface name of at most 15 characters"
    if key == "id":
        return "expected letters, digits, . _ : -, at most 48 characters"
    return "expected a name: lowercase letters, digits, - and _, starting with a letter or digit, at most 31 characters"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _parent_keys(path: tuple[Any, ...], data: Any) -> list[str]:
    """The keys allowed where an unknown key was found (for the error message)."""
    annotation: Any = PolicyDocument
    node = data
    for part in path[:-1]:
        annotation = _step(annotation, part, node.get("type") if isinstance(node, dict) else None)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if annotation is None:
            return []
    model = _model_of(annotation, node.get("type") if isinstance(node, dict) else None)
    return [f.alias or name for name, f in model.model_fields.items()] if model else []


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _model_of(annotation: Any, tag: Any = None) -> Any:
    """The pydantic model behind X | None / Annotated[X, ...] / a tagged union, if one."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        type_field = annotation.model_fields.get("type")
        if tag is not None and type_field is not None and tag not in typing.get_args(type_field.annotation):
            return None
        return annotation
    if typing.get_origin(annotation) in (dict, list):
        return None
    for arg in typing.get_args(annotation):
        found = _model_of(arg, tag)
        if found is not None:
            return found
    return None


def _step(annotation: Any, part: Any, tag: Any = None) -> Any:
    """The annotation one path segment below `annotation` (`tag`: the node's `type`)."""
    import typing

    model = _model_of(annotation, tag)
    container = annotation
    while typing.get_origin(container) not in (dict, list, None) or (
        typing.get_origin(container) is None and typing.get_args(container)
    ):
        args = [a for a in typing.get_args(container) if a is not type(None)]
        if not args:
            break
        container = args[0]
    origin = typing.get_origin(container)
    if origin is dict:
        return typing.get_args(container)[1]
    if origin is list:
        return typing.get_args(container)[0]
    if model is not None and isinstance(part, str):
        field = model.model_fields.get(part) or next((f for f in model.model_fields.values() if f.alias == part), None)
        return field.annotation if field else None
    return None
