"""Importers: bring an existing Proxmox VE firewall or libvirt nwfilter setup into zonewall.

Each importer reads its source format (keeping file:line of everything it reads),
translates it into the policy format of policy-spec.md, and lists in a `Report`
everything it could not translate exactly. `emit.py` writes the YAML with a
`# from FILE:LINE` comment on each translated rule. docs/migrating.md explains the
mapping of concepts.
"""
