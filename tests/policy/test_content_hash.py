"""A document set's content hash, hashed a chunk at a time, is the hash of its whole
JSON encoding: what the controller stores and sends, and what every agent checks a
delta's result against."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.policy.documents import HASH_CHUNK, content_hash


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
