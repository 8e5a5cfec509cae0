"""The zonewall node agent: enforces its node's share of the controller's policy.

daemon.py wires the parts: client.py (the controller's API), enforcer.py (compile,
apply, verify, repair), drift.py (nft monitor), state.py (last applied state on
disk), discovery.py (guest NIC -> tap), notify.py + hooks/qemu (libvirt events).
"""

AGENT_VERSION = "0.1.0"
