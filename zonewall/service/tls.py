"""TLS settings that every HTTPS client of the controller shares (the agent, the CLI)."""

from __future__ import annotations

import ssl


def tls_verify(ca: str | None) -> ssl.SSLContext | bool:
    """Verify the controller's certificate: against `ca` if given, else the system's."""
    return ssl.create_default_context(cafile=ca) if ca else True
