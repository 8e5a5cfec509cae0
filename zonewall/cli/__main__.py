"""`python -m zonewall.cli`: the `zonewall` command."""

from . import main

main()
