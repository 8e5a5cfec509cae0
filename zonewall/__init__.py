"""zonewall: zone-based stateful nftables firewall for VM clusters."""

import sys

# httpx imports its own command-line tool (`httpx._main`) whenever click and rich are
# installed, as they are here for our CLI: rich's syntax highlighting, pygments and
# its lexers, ~3-5 MiB of every process that talks HTTP, the agent's included (issue
# 14's memory target). We never run that tool; marked absent, httpx skips it (its
# import is guarded for a missing `click`), and everything else of httpx is the same.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
