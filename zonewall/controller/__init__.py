"""The zonewall controller: policy revisions, node inventory and the agents' API.

`zonewall serve` runs it (server.py); docs/controller.md documents the API.
"""
