"""The control API: a trio server inside the node and clients (blocking for the CLI, asyncio for
the TUI), speaking msgpack frames over a unix socket or stdio."""
