"""Pure, sans-IO protocol code: everything two implementations must agree on byte for byte.

Records and their canonical encoding, signatures and ids; document manifests and chunk hashing;
the set-reconciliation and transfer state machines; invite codes; control-wire framing.
Imports nothing else of p2pshare and does no I/O, so it is tested without a network.
"""
