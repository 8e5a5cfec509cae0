#!/usr/bin/env python3
"""Screenshots of the dashboard's main pages, taken from a real lab run.

Runs the browser tests (tests/browser/: three-tier labs, a controller and agents,
refused probes in the log, headless Debian chromium) with $ZONEWALL_SCREENSHOTS set,
so that the pages they check are also saved as PNGs: overview, matrix, vm (db1), logs,
revision (2, with its diff), trace (full pages); edit (a preview), overview-graphs,
node, zones, and a 50-zone policy's matrix-50-zones and zones-50-zones (1280x800).
Needs root (the lab). Run: .venv/bin/python tools/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    env = dict(os.environ, ZONEWALL_SCREENSHOTS=str(args.out.resolve()))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "tests/browser"], cwd=ROOT, env=env)
    if done.returncode == 0:
        for png in sorted(args.out.glob("*.png")):
            print(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
