"""``config.toml``: the few settings a person may want to edit by hand."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4011"
FETCH_POLICIES = ("followed", "all", "none")


class ConfigError(Exception):
    """config.toml is unreadable or holds a bad value; the message names the key."""


@dataclass
class Config:
    name: str = ""
    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN])
    bootstrap: list[str] = field(default_factory=list)
    communities: list[str] = field(default_factory=lambda: ["public"])
    fetch: str = "followed"
    mdns: bool = True


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(items: list[str]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]"


def render_config(config: Config) -> str:
    return (
        "# p2pshare node settings. Edit while the node is stopped.\n"
        f"name = {_quote(config.name)}\n"
        "# Addresses to listen on (libp2p multiaddrs).\n"
        f"listen = {_array(config.listen)}\n"
        "# Peers to dial at start-up, as /ip4/.../tcp/.../p2p/<peer id>.\n"
        f"bootstrap = {_array(config.bootstrap)}\n"
        f"communities = {_array(config.communities)}\n"
        '# Which documents to download by themselves: "followed", "all" or "none".\n'
        f"fetch = {_quote(config.fetch)}\n"
        "# Find peers on the local network.\n"
        f"mdns = {'true' if config.mdns else 'false'}\n"
    )


def write_config(path: Path, config: Config) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_config(config), encoding="utf-8")
    tmp.replace(path)


def load_config(path: Path) -> Config:
    if not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    config = Config()
    for key, kind in (("name", str), ("fetch", str), ("mdns", bool)):
        if key in data:
            if not isinstance(data[key], kind):
                raise ConfigError(f"{path}: {key} must be a {kind.__name__}")
            setattr(config, key, data[key])
    for key in ("listen", "bootstrap", "communities"):
        if key in data:
            value = data[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: {key} must be a list of strings")
            setattr(config, key, value)
    if config.fetch not in FETCH_POLICIES:
        raise ConfigError(f"{path}: fetch must be one of {', '.join(FETCH_POLICIES)}")
    return config
