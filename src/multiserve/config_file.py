"""``multiserve serve --config FILE.toml`` and ``--print-config``: settings from a file, layered.

A key is a setting's long option name, with dashes or underscores (``max-conns = 100`` or
``max_conns = 100``); an on/off flag's key is its setting (``uvloop = false``) or its flag
(``no-uvloop = true``). Every value goes through the setting's own validator
(``multiserve.config.SETTINGS``), so a bad one is refused with one line naming the file and the
key. Precedence, as in gunicorn: default < file < command line.
"""
from __future__ import annotations

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .config import SETTINGS, ServerConfig, SettingError

DEFAULT, FILE, FLAG = "default", "file", "flag"


def _keys() -> dict:
    """Accepted key (underscored) -> (setting, inverted?)."""
    keys = {}
    for s in SETTINGS:
        keys[s.name] = (s, False)
        keys[s.flag.lstrip("-").replace("-", "_")] = (s, s.action == "store_false")
    return keys


KEYS = _keys()


def read_config_file(path: str) -> dict:
    """The settings ``path`` gives, validated: {setting name: value}. Raises SettingError with
    one line (a file that cannot be read or parsed, an unknown key, a bad value)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingError(f"--config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"--config {path}: not valid TOML: {exc}") from None
    settings = {}
    for key, value in data.items():
        found = KEYS.get(key.replace("-", "_"))
        if found is None:
            raise SettingError(f"{path}: unknown key {key!r}: keys are the long option names "
                               f"({', '.join(s.name for s in SETTINGS)})")
        setting, inverted = found
        if inverted:
            if not isinstance(value, bool):
                raise SettingError(f"{path}: {key}: must be true or false, got {value!r}")
            value = not value
        try:
            settings[setting.name] = setting.validate(value)
        except (TypeError, ValueError) as exc:
            raise SettingError(f"{path}: {key}: {exc}") from None
    return settings


def layered_config(flags: dict, path: str | None = None) -> tuple:
    """(ServerConfig, {setting name: "default" | "file" | "flag"}): the file's settings over the
    defaults, the command line's over both."""
    from_file = read_config_file(path) if path else {}
    sources = {s.name: FLAG if s.name in flags else FILE if s.name in from_file else DEFAULT for s in SETTINGS}
    return ServerConfig(**{**from_file, **flags}), sources


def render(config, sources: dict) -> str:
    """The effective settings as TOML that ``--config`` reads back, each with where it came
    from; an unset one (None) is a comment."""
    lines = []
    for s in SETTINGS:
        value = getattr(config, s.name)
        where = sources[s.name]
        if value is None:
            lines.append(f"# {s.name} = (unset)  # {where}")
            continue
        lines.append(f"{s.name} = {_toml(value, s)}  # {where}")
    return "\n".join(lines)


def _toml(value, setting) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v, setting) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if setting.name == "unix_mode":
        return oct(value)
    return repr(value)


