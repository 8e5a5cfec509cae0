"""Tests for zonewall.dataplane and zonewall.compiler.diff."""
