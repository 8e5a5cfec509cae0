"""The operator's side of the controller API: profiles and an HTTP client (used by
`zonewall push/pull/status/revisions/rollback/nodes/logs`)."""
