"""Helpers for kernel tests: talk to a namespace's nftables without our backend."""

from __future__ import annotations

import json
import subprocess

FOREIGN = """
table inet docker {
    chain fw {
        type filter hook forward priority 0; policy accept;
        ct state established,related accept
        counter accept
    }
}
"""


def nft(ns: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"nft {' '.join(args)} in {ns}: {result.stderr}")
    return result.stdout


def load_foreign(ns: str) -> str:
    """Install Docker-like table; return its listing for later comparison."""
    nft(ns, "-f", "-", stdin=FOREIGN)
    return foreign_listing(ns)


def foreign_listing(ns: str) -> str:
    return nft(ns, "list", "table", "inet", "docker")


def tables(ns: str) -> list[tuple[str, str]]:
    out = json.loads(nft(ns, "-j", "list", "tables"))
    return [(o["table"]["family"], o["table"]["name"]) for o in out["nftables"] if "table" in o]
