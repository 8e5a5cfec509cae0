"""Running zonewall as a system service: systemd's notify protocol (readiness,
watchdog), config files whose keys are the command's options, journald-friendly
logs, and the unit and config files the packages install (docs/operations.md)."""
