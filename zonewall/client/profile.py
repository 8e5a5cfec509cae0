"""Where the controller is and who we are to it: a profile file, the environment, flags.

The profile file (TOML, `$ZONEWALL_CONFIG` or `~/.config/zonewall/client.toml`) holds
named profiles:

    [profiles.default]
    url = "https://ctl.example:9440"
    token_file = "~/.config/zonewall/admin.token"   # or token = "zw_..."
    ca = "/etc/zonewall/ca.pem"

    [profiles.staging]
    url = "https://ctl-staging.example:9440"
    token_file = "~/.config/zonewall/staging.token"

The profile used is `--profile`, else `$ZONEWALL_PROFILE`, else `default`. Each value
can be overridden by the environment (`$ZONEWALL_CONTROLLER`, `$ZONEWALL_TOKEN`,
`$ZONEWALL_TOKEN_FILE`, `$ZONEWALL_CA`) and those by the command's flags. Without any
of them the controller is http://127.0.0.1:9440. A token file must not be readable
by others (it is a password): a group- or world-readable one is refused.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9440"


class ProfileError(ValueError):
    """The profile cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    token: str | None
    ca: str | None
    source: str  # where the values came from, for messages


def config_path() -> Path:
    explicit = os.environ.get("ZONEWALL_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "zonewall" / "client.toml"


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None


def read_token_file(path: Path) -> str:
    path = path.expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise ProfileError(f"token file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        raise ProfileError(f"token file {path} is readable by others: chmod 600 {path}")
    if not text:
        raise ProfileError(f"token file {path} is empty")
    return text


def resolve(profile: str | None = None, url: str | None = None, token: str | None = None,
            token_file: Path | None = None, ca: Path | None = None) -> Profile:
    """The effective profile: flags > environment > profile file > defaults."""
    path = config_path()
    name = profile or os.environ.get("ZONEWALL_PROFILE") or "default"
    profiles = _read_file(path).get("profiles", {})
    if not isinstance(profiles, dict):
        raise ProfileError(f"{path}: `profiles` must be a table of [profiles.NAME] sections")
    entry = profiles.get(name)
    if entry is None and (profile or os.environ.get("ZONEWALL_PROFILE")):
        known = ", ".join(sorted(profiles)) or "none"
        raise ProfileError(f"no profile {name!r} in {path} (profiles there: {known})")
    entry = entry or {}
    unknown = set(entry) - {"url", "token", "token_file", "ca"}
    if unknown:
        raise ProfileError(f"{path}: profile {name!r}: unknown key(s) {', '.join(sorted(unknown))} (expected url, token, token_file, ca)")
    chosen_url = url or os.environ.get("ZONEWALL_CONTROLLER") or entry.get("url") or DEFAULT_URL
    if not chosen_url.startswith(("http://", "https://")):
        raise ProfileError(f"controller URL {chosen_url!r} must start with http:// or https://")
    secret = token
    if secret is None and token_file is not None:
        secret = read_token_file(token_file)
    if secret is None:
        secret = os.environ.get("ZONEWALL_TOKEN") or None
    if secret is None and os.environ.get("ZONEWALL_TOKEN_FILE"):
        secret = read_token_file(Path(os.environ["ZONEWALL_TOKEN_FILE"]))
    if secret is None and entry.get("token"):
        secret = str(entry["token"])
    if secret is None and entry.get("token_file"):
        secret = read_token_file(Path(str(entry["token_file"])))
    chosen_ca = str(ca) if ca else os.environ.get("ZONEWALL_CA") or entry.get("ca")
    if chosen_ca:
        chosen_ca = str(Path(chosen_ca).expanduser())
        if not Path(chosen_ca).is_file():
            raise ProfileError(f"CA certificate {chosen_ca}: no such file")
    return Profile(name, chosen_url.rstrip("/"), secret, chosen_ca, str(path) if entry else "defaults")
