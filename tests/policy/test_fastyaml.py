"""The fast reader (policy/fastyaml.py) builds exactly what the full reader builds, or
declines: the same keys in the same order, the same scalar values and types, the same
position for every mapping, key, value and list item. Checked on every policy in the
repository (the broken corpus included) and on generated documents written in every
style the fast reader takes and several it must decline."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zonewall.policy import fastyaml, source
from zonewall.policy.errors import PolicyError
from zonewall.policy.source import LDict, LList

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import synth  # noqa: E402

# full() undoes its own monkeypatching each time, so the fixture may serve every example
PROPERTY = settings(
    max_examples=int(os.environ.get("ZONEWALL_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def full(text: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """What the full reader (libyaml + source._build) makes of `text`; PolicyError if it refuses."""
    monkeypatch.setattr(source, "read_plain", lambda text, display: None)
    path = tmp_path / "p.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        data, problems = source.read_file_lenient(path, "p.yaml")
    finally:
        monkeypatch.undo()
    if problems:  # the full reader read on, but the file has problems: the fast one must decline
        raise PolicyError(problems)
    return data


def fast(text: str) -> Any:
    return fastyaml.read(text, "p.yaml", source._FastLoader)


def same(a: Any, b: Any, where: str = "") -> None:
    """Equal values of the same types, and equal positions throughout."""
    assert type(a) is type(b) or (isinstance(a, LDict) and isinstance(b, LDict)) or (isinstance(a, LList) and isinstance(b, LList)), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, LDict):
        assert list(a) == list(b), where
        assert a.loc == b.loc, f"{where}: {a.loc} != {b.loc}"
        for key in a:
            assert a.key_locs[key] == b.key_locs[key], f"{where}.{key} (key): {a.key_locs[key]} != {b.key_locs[key]}"
            assert a.value_locs[key] == b.value_locs[key], f"{where}.{key}: {a.value_locs[key]} != {b.value_locs[key]}"
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, LList):
        assert len(a) == len(b) and a.loc == b.loc, f"{where}: {a.loc} != {b.loc}"
        assert a.value_locs == b.value_locs, f"{where}: {a.value_locs} != {b.value_locs}"
        for index, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{index}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"  # NaN


def agree(text: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> bool:
    """The fast reader equals the full one, or declines; True if it read the text."""
    got = fast(text)
    try:
        want = full(text, monkeypatch, tmp_path)
    except PolicyError:
        assert got is None, "the fast reader accepted what the full reader refuses"
        return False
    if got is not None:
        same(got, want)
    return got is not None


def repository_policies() -> list[Path]:
    out = []
    for folder in ("examples", "tests/scenarios", "tests/kernel/policies", "tests/policy"):
        out += sorted((ROOT / folder).rglob("*.yaml")) + sorted((ROOT / folder).rglob("*.yml"))
    return out


def test_every_policy_in_the_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = repository_policies()
    assert len(files) > 150
    read = 0
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        try:
            read += agree(text, monkeypatch, tmp_path)
        except AssertionError as exc:
            raise AssertionError(f"{path.relative_to(ROOT)}: {exc}") from None
    assert read > 80  # most are in the fast reader's part of YAML


def test_synthetic_policies_take_the_fast_way(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for text in (synth.policy_text(40, nodes=2), synth.policy_text(30, dataplane_extras=True, filters=False)):
        assert agree(text, monkeypatch, tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",  # anchors and aliases
        "a: !!str 1\n",  # tags
        "a: |\n  text\n",  # block scalars
        "a: \"x\\ty\"\n",  # escapes
        "a:\n",  # a key without a value
        "a: 1\na: 2\n",  # a duplicate key (the full reader says so)
        "<<: {a: 1}\n",  # merge keys
        "a: [1,\n  2]\n",  # a flow collection over two lines
        "a: b\n  c\n",  # a plain scalar over two lines
        "a:\tb\n",  # tabs
        "---\na: 1\n",  # document markers
        "a: 'it''s'\n",  # quote escapes
        "- a\n",  # not a mapping at the top
        "a: x: y\n",  # a mapping value inside a plain scalar
        "a: {b: 1, b: 2}\n",  # a duplicate key in a flow mapping
        "a: [b, - c]\n",  # a block entry inside a flow sequence
        "a: b #c\n\u2028d: e\n",  # YAML's other line breaks
    ],
)
def test_outside_the_subset_it_declines(text: str) -> None:
    assert fast(text) is None


# -- generated documents -------------------------------------------------------------

WORDS = st.sampled_from([
    "web1", "group:admins", "vm:db-1", "10.0.0.0/8", "fd00::1", "fd00:99:1a::/48", "08:00-18:00", "52:54:00:00:01:01",
    "22", "0", "-1", "+3", "1_000", "0x1F", "017", "1e3", "1.5", ".5", "1.", "true", "False", "yes", "No", "on", "OFF",
    "null", "Null", "~", "2020-01-02", "2001-12-14t21:59:43.10-05:00", "100/second", "a b", "allow web  traffic",
    "it's", "a-b", "a.b", "x_y", "(note)", "50%", "a=b", "3:30", "190:20:30", "1:2", "-.inf", ".NaN", "12:30:45",
])
QUOTED = st.text(alphabet=st.sampled_from(list("abz019 :,-#{}[]/.'") + ["é"]), max_size=12)
KEYS = st.sampled_from(["direction", "action", "tcp", "from", "to", "web1", "z-1", "a.b", "1", "true", "null", "x_y", "10", "on"])


def scalars() -> st.SearchStrategy[str]:
    return st.one_of(WORDS, QUOTED.map(lambda t: '"' + t.replace('"', "") + '"'), QUOTED.map(lambda t: "'" + t.replace("'", "") + "'"))


def flow(depth: int) -> st.SearchStrategy[str]:
    if depth <= 0:
        return scalars()
    inner = st.one_of(scalars(), st.deferred(lambda: flow(depth - 1)))
    spaces = st.sampled_from(["", " ", "  "])
    mapping = st.lists(st.tuples(KEYS, inner, spaces, spaces), max_size=4, unique_by=lambda kv: kv[0]).map(
        lambda pairs: "{" + ",".join(f"{s1}{k}: {v}{s2}" for k, v, s1, s2 in pairs) + "}"
    )
    sequence = st.lists(st.tuples(inner, spaces), max_size=4).map(lambda items: "[" + ",".join(f"{s}{v}" for v, s in items) + "]")
    return st.one_of(mapping, sequence)


def block(depth: int, indent: int) -> st.SearchStrategy[list[str]]:
    """Lines of a block mapping at `indent` (values: scalars, flow, nested blocks)."""
    pad = " " * indent
    comment = st.sampled_from(["", "", " # note", "  #x"])
    leaf = st.tuples(KEYS, st.one_of(scalars(), flow(2)), comment).map(lambda t: [f"{pad}{t[0]}: {t[1]}{t[2]}"])
    if depth <= 0:
        entries = leaf
    else:
        step = st.sampled_from([2, 4])
        nested = st.tuples(KEYS, step).flatmap(
            lambda t: block(depth - 1, indent + t[1]).map(lambda lines, key=t[0]: [f"{pad}{key}:"] + lines)
        )
        seq_items = st.lists(st.one_of(scalars(), flow(1)), min_size=1, max_size=3)
        indentless = st.tuples(KEYS, seq_items).map(lambda t: [f"{pad}{t[0]}:"] + [f"{pad}- {v}" for v in t[1]])
        indented = st.tuples(KEYS, seq_items).map(lambda t: [f"{pad}{t[0]}:"] + [f"{pad}  - {v}" for v in t[1]])
        compact = st.tuples(KEYS, st.lists(st.tuples(KEYS, scalars()), min_size=1, max_size=3, unique_by=lambda kv: kv[0])).map(
            lambda t: [f"{pad}{t[0]}:", f"{pad}  - {t[1][0][0]}: {t[1][0][1]}"] + [f"{pad}    {k}: {v}" for k, v in t[1][1:]]
        )
        entries = st.one_of(leaf, nested, indentless, indented, compact)
    # (keys of nested entries may repeat an outer key's name: harmless; duplicates within
    # one mapping come from `leaf` keys drawn twice, a case the fast reader must decline)
    return st.lists(entries, min_size=1, max_size=4).map(lambda items: [line for lines in items for line in lines])


@PROPERTY
@given(lines=block(2, 0), blank=st.booleans(), trailing=st.sampled_from(["\n", "", "\n\n", "\n# end\n"]))
def test_generated_documents_agree(lines: list[str], blank: bool, trailing: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    if blank and len(lines) > 1:
        lines = lines[:1] + ["", "# a comment"] + lines[1:]
    agree("\n".join(lines) + trailing, monkeypatch, tmp_path_factory.mktemp("y"))


def test_generated_documents_mostly_take_the_fast_way(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    read = []

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(lines=block(2, 0))
    def run(lines: list[str]) -> None:
        read.append(agree("\n".join(lines) + "\n", monkeypatch, tmp_path))

    run()
    assert sum(read) > len(read) // 4, f"{sum(read)} of {len(read)} read by the fast reader"


# -- a line written again ------------------------------------------------------------

RULE_LINE = flow(2).filter(lambda text: text.startswith("{"))  # mappings with scalars, lists, mappings inside
PLACES = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["", "  ", "    "]), st.sampled_from(["", "  "]), st.sampled_from(["", " # c", "   #x"])),
    min_size=2, max_size=6,
)


@PROPERTY
@given(lines=st.lists(RULE_LINE, min_size=1, max_size=3), places=PLACES)
def test_a_line_written_again_reads_as_where_it_stands(
    lines: list[str], places: list[tuple[int, str, str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The fast reader copies a flow mapping line it met before (`_RuleLine`): each
    copy must be what the full reader builds there, positions of its lists included."""
    text = []
    for number, (which, indent, gap, comment) in enumerate(places):
        item = f"{indent}-{gap} {lines[which % len(lines)]}{comment}"
        text += [f"k{number}:", item, item]
    agree("\n".join(text) + "\n", monkeypatch, tmp_path_factory.mktemp("y"))


def test_a_line_written_again_takes_the_fast_way(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    line = "{direction: in, action: accept, from: [group:a, 10.0.0.0/8], tcp: [22, 443], limit: {rate: 5/second}}"
    simple = "{direction: in, action: accept, tcp: 22}"
    text = f"a:\n  - {line}\n  - {simple}\nb:\n- {simple}\n-    {line} # again\n"
    assert agree(text, monkeypatch, tmp_path)
    read = fast(text)
    assert read["a"][0]["from"] is not read["b"][1]["from"] and read["a"][1] is not read["b"][0]
