"""Moved to :mod:`zonewall.policy.documents` (the agent needs them too, and the agent
and the controller share only what lives below both). This name stays only while
branches written before the move land; import from zonewall.policy.documents."""

from ..policy.documents import (
    Documents,
    check_documents,
    content_hash,
    document_name_problem,
    load_documents,
    problems_json,
    read_directory,
    write_documents,
)

__all__ = [
    "Documents",
    "check_documents",
    "content_hash",
    "document_name_problem",
    "load_documents",
    "problems_json",
    "read_directory",
    "write_documents",
]
