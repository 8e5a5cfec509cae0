"""GitOps: the controller follows a git repository's branch.

Every new commit on the branch (first parent, oldest first) becomes a revision: the
policy files under `path` at that commit as the document set, the commit's author
as the revision's author and its message as the revision's message (kind `git`,
change `{"op": "git", "commit": SHA, ...}`). A commit whose policy is invalid is
refused exactly like a refused upload: nothing is stored, agents hear nothing, the
previous revision stays enforced; the refusal (commit, problems) is the follower's
status (`GET /api/v1/gitops`, `zonewall status`, the dashboard) until a later commit
is accepted. A commit that changes nothing in the policy records nothing.

The repository is mirrored with the real `git` into `DATA_DIR/gitops/mirror.git`
(a bare repository, fetched every `interval` seconds or at `POST /api/v1/gitops/sync`).
Where to start after a restart is found in the revisions themselves (the newest one
made from a commit); on the very first sync only the branch's head is taken, not its
whole history. Credentials are git's own (an ssh key of the controller's user, a
credential helper, or a token in an https URL): nothing here stores them. API edits
stay possible; they last until the next commit, so commit them back (`zonewall pull`
into the checkout: the documents keep their comments).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..policy.documents import Documents, problems_json
from ..policy.errors import PolicyError
from .store.revisions import Proposal

log = logging.getLogger("zonewall.controller.gitops")
GIT_TIMEOUT = 120.0
MAX_AUTHOR = 128


class GitError(RuntimeError):
    pass


@dataclass(frozen=True)
class GitSource:
    repository: str  # a URL or a local path, as `git clone` takes it
    branch: str = "main"
    path: str = ""  # the policy directory inside the repository ("" = the root)
    interval: float = 15.0


@dataclass
class FollowStatus:
    state: str = "starting"  # starting | following | refused | error
    last_commit: str | None = None  # the newest commit looked at
    last_revision: int | None = None  # the revision the newest accepted commit made (or matched)
    refused_commit: str | None = None
    refused_subject: str | None = None
    error: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)
    checked_at: float | None = None


def public(repository: str) -> str:
    """The repository without credentials an https URL may carry (revisions and the
    status are readable by viewers)."""
    parts = urlsplit(repository)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return repository


def _git(args: list[str], cwd: Path | None = None, *, binary: bool = False) -> Any:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT, env=env, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} did not finish in {GIT_TIMEOUT:g} s") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]}: {message[-1] if message else f'exit {done.returncode}'}")
    return done.stdout if binary else done.stdout.decode("utf-8", "replace")


class GitFollower:
    def __init__(self, ctl: Any, source: GitSource, workdir: Path) -> None:
        self.ctl = ctl
        self.source = source
        self.mirror = workdir / "mirror.git"
        self.status = FollowStatus()
        self._lock = threading.Lock()  # one sync at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> GitFollower:
        self._thread = threading.Thread(target=self._run, name="zonewall-gitops", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=GIT_TIMEOUT + 5)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sync()
            self._wake.wait(self.source.interval)
            self._wake.clear()

    # -- one round ----------------------------------------------------------------------

    def sync(self) -> FollowStatus:
        """Fetch and turn every new commit into a revision; never raises."""
        with self._lock:
            try:
                head = self._fetch()
                for commit in self._new_commits(head):
                    self._take(commit)
                    if self._stop.is_set():
                        break
                if self.status.state in ("starting", "error"):
                    self.status.state = "refused" if self.status.refused_commit else "following"
                    self.status.error = None
            except GitError as exc:
                log.warning("following %s %s: %s", public(self.source.repository), self.source.branch, exc)
                self.status.state, self.status.error = "error", str(exc).replace(self.source.repository, public(self.source.repository))
            self.status.checked_at = time.time()
            return self.status

    def _fetch(self) -> str:
        ref = f"refs/heads/{self.source.branch}"
        if not (self.mirror / "HEAD").exists():
            self.mirror.parent.mkdir(parents=True, exist_ok=True)
            _git(["init", "--bare", "--quiet", str(self.mirror)])
            _git(["remote", "add", "origin", self.source.repository], cwd=self.mirror)
        _git(["fetch", "--quiet", "--no-tags", "--force", "origin", f"+{ref}:{ref}"], cwd=self.mirror)
        return _git(["rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=self.mirror).strip()

    def _last_taken(self) -> str | None:
        if self.status.last_commit:
            return self.status.last_commit
        for row in self.ctl.revisions.history(200):  # the newest revision made from a commit
            change = json.loads(row.change or "{}")
            if change.get("op") == "git" and change.get("repository") == public(self.source.repository) and change.get("branch") == self.source.branch:
                return str(change["commit"])
        return None

    def _new_commits(self, head: str) -> list[str]:
        last = self._last_taken()
        if last == head:
            return []
        if last is not None:
            try:
                _git(["merge-base", "--is-ancestor", last, head], cwd=self.mirror)
            except GitError:  # rewritten history (a force push): take the new head only
                log.warning("%s is not an ancestor of %s (history rewritten): taking the head", last[:12], head[:12])
                return [head]
            return _git(["rev-list", "--reverse", "--first-parent", f"{last}..{head}"], cwd=self.mirror).split()
        return [head]

    def documents_at(self, commit: str) -> Documents:
        prefix = self.source.path.strip("/")
        listing = _git(["ls-tree", "-r", "-z", "--name-only", commit, "--", prefix or "."], cwd=self.mirror)
        documents: Documents = {}
        for name in filter(None, listing.split("\0")):
            if not name.endswith((".yaml", ".yml")):
                continue
            relative = name[len(prefix) + 1:] if prefix else name
            if any(part.startswith(".") for part in relative.split("/")):
                continue  # a repository's tooling (.gitlab-ci.yml, .github/...), never a document name
            raw = _git(["cat-file", "blob", f"{commit}:{name}"], cwd=self.mirror, binary=True)
            documents[relative] = raw.decode("utf-8", "surrogateescape")  # not UTF-8: the loader says where
        return documents

    def _take(self, commit: str) -> None:
        name, email, subject, body = _git(["log", "-1", "--format=%an%x00%ae%x00%s%x00%B", commit], cwd=self.mirror).split("\0", 3)
        author = f"{name} <{email}>"[:MAX_AUTHOR]
        change = {"op": "git", "repository": public(self.source.repository), "branch": self.source.branch, "path": self.source.path, "commit": commit}
        self.status.last_commit = commit
        try:
            documents = self.documents_at(commit)
            committed = self.ctl.revisions.commit(Proposal(documents=documents, author=author, message=body.strip(), kind="git", change=change))
        except PolicyError as exc:
            problems = problems_json(exc)
            log.warning("commit %s refused (%d problems); revision %s stays", commit[:12], len(problems), self.ctl.revisions.current_number())
            self.status.state, self.status.refused_commit, self.status.refused_subject = "refused", commit, subject
            self.status.problems, self.status.error = problems, f"commit {commit[:12]} refused: {problems[0]['text'] if problems else 'invalid policy'}"
            return
        self.ctl.revisions.attach_diff(committed)
        self.status.state, self.status.refused_commit, self.status.refused_subject = "following", None, None
        self.status.problems, self.status.error = [], None
        self.status.last_revision = committed.row.number
        if committed.created:
            log.info("commit %s by %s is revision %d", commit[:12], author, committed.row.number)

    def to_json(self) -> dict[str, Any]:
        s = self.status
        return {
            "enabled": True, "repository": public(self.source.repository), "branch": self.source.branch, "path": self.source.path,
            "interval": self.source.interval, "state": s.state, "last_commit": s.last_commit, "last_revision": s.last_revision,
            "refused_commit": s.refused_commit, "refused_subject": s.refused_subject, "error": s.error, "problems": s.problems,
            "checked_at": s.checked_at,
        }
