"""TLS settings that every HTTPS client of the controller shares (the agent, the CLI)."""

from __future__ import annotations

import ssl

import httpx


def tls_verify(ca: str | None) -> ssl.SSLContext:
    """Verify the controller's certificate: against `ca` if given, else against the
    trust store httpx uses by default (certifi's, or $SSL_CERT_FILE / $SSL_CERT_DIR).

    Always a context, never httpx's `True`: with `True` every client loads that store
    anew (~0.8 MiB each), so a process with several clients (the agent has five
    threads talking to the controller) passes one context to all of them."""
    return ssl.create_default_context(cafile=ca) if ca else httpx.create_ssl_context()
