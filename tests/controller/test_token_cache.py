"""A controller remembers known tokens for a few seconds; revocations still bite.

Every request asks who its token is (twice for a long-poll); at 100 agents the
database lookups cost as much as the commits. The cache may keep a token only as
long as REVALIDATE_SECONDS, forgets it at once when revoked through this
controller, and never remembers an unknown or revoked one.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from zonewall.controller.store.db import open_database
from zonewall.controller.store.tokens import REVALIDATE_SECONDS, TokenCache, create_token, revoke_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(db_url: str) -> tuple[sessionmaker[Session], TokenCache, Clock]:
    sessions = open_database(db_url)
    clock = Clock()
    return sessions, TokenCache(sessions, clock=clock), clock


def test_a_known_token_is_looked_up_once_per_interval(db_url: str) -> None:
    sessions, cache, clock = _cache(db_url)
    row, secret = create_token(sessions, "agent", node="node1")
    for _ in range(5):
        who = cache.authenticate(secret)
        assert who is not None and who.node == "node1" and who.token_id == row.id
    assert cache.lookups == 1
    clock.now += REVALIDATE_SECONDS + 0.1
    assert cache.authenticate(secret) is not None
    assert cache.lookups == 2  # asked again once the interval passed


def test_the_known_tokens_are_asked_about_again_in_one_query(db_url: str) -> None:
    sessions, cache, clock = _cache(db_url)
    made = [create_token(sessions, "agent", node=f"node{n}") for n in range(30)]
    for _row, secret in made:
        assert cache.authenticate(secret) is not None
        clock.now += 0.1  # looked up at different moments
    assert cache.lookups == 30
    revoke_token(sessions, made[7][0].id)  # elsewhere: in the database only
    clock.now += REVALIDATE_SECONDS
    answers = [cache.authenticate(secret) for _row, secret in made]
    assert [who is not None for who in answers] == [n != 7 for n in range(30)]
    assert cache.lookups == 32  # one query for the 30 (it was 30 more), and the revoked one, forgotten by it, asked alone
    assert cache.authenticate(made[7][1]) is None and cache.lookups == 33  # and again: never remembered


def test_a_token_revoked_through_this_controller_is_refused_at_once(db_url: str) -> None:
    sessions, cache, _clock = _cache(db_url)
    kept, kept_secret = create_token(sessions, "viewer", name="kept")
    row, secret = create_token(sessions, "agent", node="node1")
    assert cache.authenticate(secret) is not None and cache.authenticate(kept_secret) is not None
    assert cache.revoke(row.id)
    assert cache.authenticate(secret) is None  # no time passed: the cache forgot it
    assert cache.authenticate(kept_secret) is not None  # others stay remembered
    assert not cache.revoke(row.id)  # already revoked: nothing to revoke
    assert kept.id != row.id


def test_a_token_revoked_elsewhere_is_refused_within_the_interval(db_url: str) -> None:
    """Another controller (or `zonewall token revoke`) writes the database only."""
    sessions, cache, clock = _cache(db_url)
    row, secret = create_token(sessions, "admin")
    assert cache.authenticate(secret) is not None
    assert revoke_token(sessions, row.id)
    clock.now += REVALIDATE_SECONDS / 2
    assert cache.authenticate(secret) is not None  # the documented bound: still trusted for a moment
    clock.now += REVALIDATE_SECONDS / 2 + 0.1
    assert cache.authenticate(secret) is None
    clock.now += 0.1
    assert cache.authenticate(secret) is None  # and stays refused


def test_unknown_tokens_are_never_remembered(db_url: str) -> None:
    sessions, cache, _clock = _cache(db_url)
    _row, secret = create_token(sessions, "viewer")
    forged = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    assert cache.authenticate(forged) is None and cache.authenticate(forged) is None
    assert cache.lookups == 2  # each asked the database
    assert cache.authenticate("not-a-zonewall-token") is None
    assert cache.lookups == 2  # not even looked up: wrong prefix


def test_a_revocation_while_the_database_is_asked_is_not_undone_by_its_answer(db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The query ran before the revocation committed, its answer arrives after: the
    token must not be remembered again (this controller refuses it at once)."""
    from zonewall.controller.store import tokens

    sessions, cache, clock = _cache(db_url)
    row, secret = create_token(sessions, "agent", node="node1")
    _other, other_secret = create_token(sessions, "viewer")
    assert cache.authenticate(secret) is not None and cache.authenticate(other_secret) is not None
    asked = tokens._lookup_many

    def answer_then_revoke(sessions_: object, hashes: list[str]) -> dict:  # type: ignore[type-arg]
        stale = asked(sessions_, hashes)  # type: ignore[arg-type]
        cache.revoke(row.id)  # committed after the query read the row
        return stale

    monkeypatch.setattr(tokens, "_lookup_many", answer_then_revoke)
    clock.now += REVALIDATE_SECONDS + 0.1
    cache.authenticate(other_secret)  # the known tokens asked about again; the answer is stale
    monkeypatch.setattr(tokens, "_lookup_many", asked)
    assert cache.authenticate(secret) is None  # refused at once, not remembered from the stale answer
    assert cache.authenticate(other_secret) is not None


def test_what_the_cache_answers_without_the_database(db_url: str) -> None:
    """The event loop asks `remembered` and goes to a thread (and the database) only
    when it is not sure: a token never seen, one past its interval, one revoked here."""
    sessions, cache, clock = _cache(db_url)
    row, secret = create_token(sessions, "agent", node="node1")
    assert cache.remembered(secret) == (False, None)  # never looked up: ask the database
    assert cache.remembered("not-a-zonewall-token") == (True, None)  # refused without asking
    assert cache.authenticate(secret) is not None
    known, who = cache.remembered(secret)
    assert known and who is not None and who.token_id == row.id
    clock.now += REVALIDATE_SECONDS + 0.1
    assert cache.remembered(secret) == (False, None)  # stale: asked again
    assert cache.authenticate(secret) is not None and cache.remembered(secret)[0]
    cache.revoke(row.id)
    assert cache.remembered(secret) == (False, None) and cache.authenticate(secret) is None
    assert cache.lookups == 3
