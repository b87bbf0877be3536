"""The node process: identity, SQLite store, blob store, and the trio + py-libp2p adapters
(host, gossip, sync, transfer, discovery) wired together by the Node service."""
