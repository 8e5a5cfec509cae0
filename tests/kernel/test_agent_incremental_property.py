"""Property, against the real kernel: an agent taking a random sequence of changes as
they come (rules edited in place, validated from the policy it parsed last; rules
added, loaded whole; mistakes, refused) ends with exactly the ruleset a whole load
and compile of the final documents gives, and a mistake never changes the kernel."""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.synth import policy_text
from zonewall.agent.enforcer import Desired, Enforcer
from zonewall.agent.state import StateStore
from zonewall.compiler.node import compile_node
from zonewall.dataplane.apply import apply_ruleset, remove_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import listing_hash
from zonewall.policy.documents import content_hash, load_documents
from zonewall.policy.errors import PolicyError

pytestmark = pytest.mark.kernel

OURS = [("inet", "zonewall"), ("bridge", "zonewall")]
BASE = policy_text(12, nodes=2)
NODE1_VMS = [f"vm{i}" for i in range(0, 12, 2)]  # synth places vm i on node (i % 2) + 1


def edited(text: str, kind: str, vm: str, value: int) -> str:
    start = text.index(f"\n  {vm}:\n")
    end = text.find("\n  vm", start + 3)
    end = len(text) if end < 0 else end
    match = re.compile(r"tcp: (\d+)\}").search(text, start, end)
    assert match is not None
    if kind == "port":  # in place: the incremental path
        return text[: match.start(1)] + str(1 + value % 65000) + text[match.end(1) :]
    if kind == "bad":  # in place, and wrong: refused as the whole load refuses it
        return text[: match.start(1)] + str(70000 + value) + text[match.end(1) :]
    line = text.rfind("\n", 0, match.start()) + 1  # a rule added before that one: lines move, loaded whole
    return text[:line] + f"      - {{direction: in, action: accept, udp: {1 + value % 65000}}}\n" + text[line:]


EDITS = st.lists(st.tuples(st.sampled_from(["port", "port", "port", "add", "bad"]), st.sampled_from(NODE1_VMS), st.integers(0, 100_000)),
                 min_size=2, max_size=8)


def test_random_changes_end_in_the_whole_compile(netns_factory: Callable[[], str]) -> None:
    kernel_ns, reference_ns = netns_factory(), netns_factory()
    loads: Counter[str] = Counter()

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(edits=EDITS)
    def run(edits: list[tuple[str, str, int]]) -> None:
        with tempfile.TemporaryDirectory(prefix="zonewall-incr-") as tmp, LibNftBackend(kernel_ns) as kernel:
            remove_ruleset(kernel, OURS)
            agent = Enforcer(kernel, "node1", StateStore(Path(tmp)), discover=lambda policy, node: {}, timezone=lambda: "UTC")
            text = BASE
            agent.enforce(Desired(1, {"policy.yaml": text}, content_hash({"policy.yaml": text})))
            for revision, (kind, vm, value) in enumerate(edits, start=2):
                new = edited(text, kind, vm, value)
                documents = {"policy.yaml": new}
                if kind == "bad":
                    before = listing_hash(kernel, OURS)
                    with pytest.raises(PolicyError):
                        agent.enforce(Desired(revision, documents, content_hash(documents)))
                    assert listing_hash(kernel, OURS) == before
                    continue
                agent.enforce(Desired(revision, documents, content_hash(documents)))
                text = new
            expected = compile_node(load_documents({"policy.yaml": text}), "node1", timezone="UTC")
            assert agent.ruleset == expected
            with LibNftBackend(reference_ns) as fresh:
                remove_ruleset(fresh, OURS)
                apply_ruleset(fresh, expected)
                assert listing_hash(kernel, OURS) == listing_hash(fresh, OURS), edits
            loads.update(agent.loads)

    run()
    assert loads["edited"] and loads["whole"], loads  # both paths were taken
