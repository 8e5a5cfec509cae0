"""Tests for zonewall.policy: the broken-policy corpus, loader behaviour, property tests."""
