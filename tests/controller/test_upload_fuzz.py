"""Random uploads never crash the controller nor keep its memory (hypothesis).

Documents of random nesting (flow and block, past the depth limit), sizes and
Unicode (control characters, surrogates, separators) go through the real upload
route; every answer is a 2xx or a 4xx with a reason, never a 5xx or a dead process,
and the process does not keep what it was sent.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.controller.live import Tokens, make_tokens
from zonewall.controller.app import create_app
from zonewall.controller.replica import build_controller
from zonewall.controller.store.db import default_url


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Tokens]]:
    controller = build_controller(default_url(tmp_path_factory.mktemp("fuzz")))
    with TestClient(create_app(controller)) as client:
        yield client, make_tokens(controller)
    controller.sessions.kw["bind"].dispose()  # type: ignore[union-attr]


def nested(depth: int, flow: bool, leaf: str) -> str:
    if flow:
        return "version: 1\nsettings: {management: " + "[" * depth + repr(leaf) + "]" * depth + "}\n"
    return "version: 1\n" + "".join(" " * 2 * i + f"k{i}:\n" for i in range(depth)) + " " * 2 * depth + f"v: {leaf!r}\n"


texts = st.one_of(
    st.builds(nested, st.integers(1, 3000), st.booleans(), st.text(max_size=20)),
    st.text(max_size=2000),  # any Unicode, surrogates and controls included
    st.builds(lambda n, word: "version: 1\nzones:\n" + f"  {word}:\n    rules: []\n" * n, st.integers(1, 200), st.text(min_size=1, max_size=8)),
    st.builds(lambda n: "version: 1\n" + "".join(f"k{i}: 1\n" for i in range(n)), st.integers(1, 20000)),
)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(documents=st.dictionaries(st.sampled_from(["policy.yaml", "a/b.yaml", "zones.yml", "x"]), texts, min_size=1, max_size=3))
def test_any_upload_gets_an_answer_never_a_crash(fuzzed: tuple[TestClient, Tokens], documents: dict[str, str]) -> None:
    client, tokens = fuzzed
    body = {"documents": {name: text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for name, text in documents.items()}}
    response = client.put("/api/v1/policy", json=body, headers=tokens.header("admin"))
    assert response.status_code < 500, response.text[:500]
    assert response.status_code in (200, 201, 409, 413, 422, 429), response.status_code
    if response.status_code == 422:
        assert response.json()["detail"], "a refusal says why"


def test_memory_stays_bounded_after_the_fuzzing(fuzzed: tuple[TestClient, Tokens]) -> None:
    """Peak memory of this test process (the in-process controller and the tests)
    after hundreds of hostile uploads, deep ones included: well under what one
    unbounded 100 MB request used to cost."""
    client, tokens = fuzzed
    before = rss_mib()
    for depth in (10_000, 25_000, 50_000):
        response = client.put("/api/v1/policy", json={"documents": {"p.yaml": nested(depth, True, "x")}}, headers=tokens.header("admin"))
        assert response.status_code == 422 and "nested more than 64 levels" in response.text
    assert rss_mib() - before < 200
