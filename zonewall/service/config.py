"""Config files for `zonewall serve` and `zonewall agent` (/etc/zonewall/*.yaml).

Every long option of the command is a key of its config file, spelled as the option
without the dashes (`verify-interval: 10`, `controller: [https://a:9440, ...]`;
`verify_interval` is accepted too). The file gives defaults; a flag on the command
line (or an option's environment variable) overrides it. Nothing is listed twice:
the keys are read from the command's own options, so an option added to the command
is a config key at once, and a key the command does not know is refused with the
file, the line and the keys it knows.

It rides on click's `default_map`: the eager `--config` option is processed before
the others and fills the map from which each option takes its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

CONFIG_HELP = "a YAML file whose keys are this command's long options (without --); flags override it"
# click's classes are reached through typer (newer typers carry their own copy of click)
Command = Any
Parameter = Any


class ConfigError(typer.BadParameter):
    """A config file problem: `file:line: message` (the command exits 2 with it)."""


def _keys(command: Command) -> dict[str, Parameter]:
    """Config key -> the option it sets (long option names; --config and --help excluded)."""
    keys: dict[str, Parameter] = {}
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or param.name in ("config", "help"):
            continue
        for opt in param.opts + param.secondary_opts:
            if opt.startswith("--"):
                keys[opt[2:]] = param
                keys[opt[2:].replace("-", "_")] = param
    return keys


def option_keys(command: Command) -> list[str]:
    """The keys a command's config file takes (documentation and tests)."""
    return sorted({key for key in _keys(command) if "_" not in key or key.replace("_", "-") not in _keys(command)})


def read_config(path: Path, command: Command) -> dict[str, Any]:
    """The file as click's default_map ({parameter name: value}); ConfigError with
    `file:line: message` for a file that is no mapping or names an unknown key. A value
    of the wrong type is refused by the option itself ("Invalid value for '--KEY'")."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or root is None or not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    lines = {str(key.value): key.start_mark.line + 1 for key, _ in root.value if isinstance(key, yaml.ScalarNode)}
    keys = _keys(command)
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}:{lines.get(str(key), 1)}"
        param = keys.get(str(key))
        if param is None or param.name is None:
            raise ConfigError(f"{where}: unknown key {key!r} (keys: {', '.join(option_keys(command))})")
        if value is None:
            continue
        if param.multiple and not isinstance(value, list):
            value = [value]
        if isinstance(value, (dict, list)) and not (param.multiple and isinstance(value, list)):
            raise ConfigError(f"{where}: {key}: expected one value, not a {type(value).__name__}")
        defaults[param.name] = value
    return defaults


def load_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """The `--config` option's callback: its file becomes the command's defaults."""
    if value is not None and not ctx.resilient_parsing:
        ctx.default_map = {**(ctx.default_map or {}), **read_config(Path(value), ctx.command)}
    return value


def config_option(default_path: str) -> Any:
    """`--config FILE` for a command (eager: read before every other option)."""
    return typer.Option(None, "--config", is_eager=True, callback=load_config, help=f"{CONFIG_HELP} (the package's: {default_path})")
