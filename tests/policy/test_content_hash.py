"""A document set's content hash, hashed a chunk at a time, is the hash of its whole
JSON encoding: what the controller stores and sends, and what every agent checks a
delta's result against."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.policy.documents import HASH_CHUNK, content_hash, hash_documents


def _whole(documents: dict[str, str]) -> str:
    """The definition, encoded whole: what agents and controllers of every version compare."""
    return hashlib.sha256(json.dumps(documents, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass")).hexdigest()

# characters JSON escapes (quotes, backslashes, controls, lone surrogates, non-ASCII)
TEXT = st.text(alphabet=st.sampled_from(['a', '\n', '"', '\\', 'é', '😀', '\ud800', '\x00', '\u2028', ' ']), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(TEXT, st.tuples(TEXT, st.integers(0, 3 * HASH_CHUNK)), max_size=3))
def test_the_content_hash_is_the_hash_of_the_whole_encoding(spec: dict[str, tuple[str, int]]) -> None:
    documents = {name: (piece * (length // max(1, len(piece)) + 1))[:length] if piece else "" for name, (piece, length) in spec.items()}
    assert content_hash(documents) == _whole(documents)


def test_documents_that_differ_hash_differently() -> None:
    base = {"a.yaml": "x" * (HASH_CHUNK + 5)}
    assert content_hash(base) != content_hash({"a.yaml": "x" * (HASH_CHUNK + 4) + "y"})
    assert content_hash(base) != content_hash({"b.yaml": base["a.yaml"]})
    assert content_hash({}) == _whole({})


EDIT = st.tuples(st.sampled_from(["insert", "delete", "replace", "add", "remove", "same"]), st.integers(0, 1 << 30), st.integers(0, 40), TEXT)


def _edited(documents: dict[str, str], edit: tuple[str, int, int, str]) -> dict[str, str]:
    kind, where, size, piece = edit
    out = dict(documents)
    if kind == "add":
        out[f"added-{where % 7}.yaml"] = piece * (size + 1)
        return out
    if not out or kind == "same":
        return out
    name = sorted(out)[where % len(out)]
    if kind == "remove":
        del out[name]
        return out
    text = out[name]
    at = where % (len(text) + 1)
    out[name] = text[:at] + piece + text[at + (size if kind in ("delete", "replace") else 0):] if kind != "delete" else text[:at] + text[at + size:]
    return out


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TEXT, st.tuples(TEXT, st.integers(0, 3 * HASH_CHUNK)), max_size=3), st.lists(EDIT, max_size=6))
def test_a_hash_taken_up_where_the_documents_first_differ_is_the_whole_encodings(spec: dict[str, tuple[str, int]], edits: list[tuple[str, int, int, str]]) -> None:
    """The controller hashes each node's new documents from where they first differ
    from its previous ones (`hash_documents(documents, previous)`): along a chain of
    edits at any place (chunk boundaries included), documents added and removed, each
    hash is the one of the whole encoding."""
    documents = {name: (piece * (length // max(1, len(piece)) + 1))[:length] if piece else "" for name, (piece, length) in spec.items()}
    hashed = hash_documents(documents)
    assert hashed.hexdigest == _whole(documents)
    for edit in edits:
        documents = _edited(documents, edit)
        hashed = hash_documents(documents, hashed)
        assert hashed.hexdigest == _whole(documents), edit


def test_an_edit_at_a_chunk_boundary_is_hashed_from_the_chunk_before() -> None:
    base = {"a.yaml": "x" * (2 * HASH_CHUNK + 10), "b.yaml": "y" * 10}
    first = hash_documents(base)
    for at in (HASH_CHUNK - 1, HASH_CHUNK, HASH_CHUNK + 1, 2 * HASH_CHUNK, 2 * HASH_CHUNK + 10):
        text = base["a.yaml"]
        for edited in ({**base, "a.yaml": text[:at] + "z" + text[at:]}, {**base, "a.yaml": text[:at] + "z" + text[at + 1:]}):  # added; replaced, same length
            assert hash_documents(edited, first).hexdigest == _whole(edited) != first.hexdigest
    assert hash_documents(dict(base), first) is first  # the same texts: the same hash, nothing hashed
    whole = {"a.yaml": "x" * (2 * HASH_CHUNK)}  # a text of whole chunks: resumed after its last one
    grown = {"a.yaml": whole["a.yaml"] + "y"}
    assert hash_documents(grown, hash_documents(whole)).hexdigest == _whole(grown)
