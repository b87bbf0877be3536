"""p2pshare: a peer-to-peer node that shares signed recommendations and documents.

Layers, imports pointing one way only (checked by import-linter):
``protocol`` (pure, sans-IO) <- ``node`` (trio + libp2p + SQLite) <- ``control`` <- ``tui``.
"""

__version__ = "0.1.0"
