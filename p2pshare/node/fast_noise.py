"""Noise transport messages with a faster read and write path: same wire, fewer Python steps.

The libp2p Noise spec, after the XX handshake: each transport message is a 2-byte big-endian
length, then ChaCha20-Poly1305 ciphertext of at most 65,535 bytes (plaintext of at most 65,519
bytes, empty associated data, nonce = 4 zero bytes + the message counter as 8 bytes
little-endian, counting from 0 in each direction). py-libp2p's ``SecureSession`` reads such a
message with two ``read_exactly`` calls (length, body), each a few awaits through msgio and the
raw connection, decrypts it through two wrapper layers, then copies it through a ``BytesIO``;
it writes each message with its own socket send. Measured on one 200 MiB stream that was about
a tenth of all the CPU the downloader spent.

``FastNoiseTransport`` runs the library's own handshake (identity, signatures, the early-data
checks: nothing of it is reimplemented) and then carries on the session with the keys and
counters the handshake left, so the bytes on the wire are exactly what the stock session sends
and expects (``tests/node/test_fast_transport.py`` runs it against the stock one both ways):

- reads take whatever the socket has (up to ``RECV_BYTES``), decrypt every whole message in it
  and keep the plaintext in one buffer, so a Yamux header and its body usually cost no socket
  read at all;
- a write encrypts its data in 65,519-byte pieces and sends them with one socket send;
- as ``host._make_secure_writes_atomic`` does for the stock session, a write encrypts and then
  sends under a shield with its own deadline: the counter has moved, so a send cancelled half
  way would desynchronise the peer for the rest of the connection.

Only the ChaCha20-Poly1305 cipher (the one libp2p's Noise uses) is handled; a session with
another cipher, or one whose handshake left buffered bytes behind, stays the stock session.
"""

from __future__ import annotations

import logging

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.io.abc import ReadWriteCloser
from libp2p.io.exceptions import IncompleteReadError, IOException
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession

logger = logging.getLogger(__name__)

RECV_BYTES = 256 * 1024  # asked of the socket per read: several whole Noise messages
WRITE_SHIELD_TIMEOUT = 10.0  # a shielded Noise write (here and host._make_secure_writes_atomic)
_LENGTH_BYTES = 2
_TAG_BYTES = 16
_MAX_NONCE = 2**64 - 1  # the Noise spec reserves the last value


class NoiseDecryptError(IOException):
    """A transport message failed its authentication tag: the connection is unusable."""


def _nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")


class FastNoiseSession(SecureSession):
    """A ``SecureSession`` that speaks the same transport messages with fewer steps."""

    def __init__(
        self,
        base: SecureSession,
        raw: ReadWriteCloser,
        send_key: bytes,
        send_nonce: int,
        recv_key: bytes,
        recv_nonce: int,
    ) -> None:
        super().__init__(
            local_peer=base.local_peer,
            local_private_key=base.local_private_key,
            remote_peer=base.remote_peer,
            remote_permanent_pubkey=base.remote_permanent_pubkey,
            is_initiator=base.is_initiator,
            conn=base.conn,  # addresses and close() still go through the stock reader/writer
        )
        self._raw = raw
        self._send_cipher = ChaCha20Poly1305(send_key)
        self._send_nonce = send_nonce
        self._recv_cipher = ChaCha20Poly1305(recv_key)
        self._recv_nonce = recv_nonce
        self._inbox = bytearray()  # ciphertext received, not yet a whole message
        self._plain = bytearray()  # decrypted and not yet read
        self._eof = False
        self._read_lock = trio.Lock()
        self._write_lock = trio.Lock()

    # --- reading --------------------------------------------------------------------------------

    async def read(self, n: int | None = None) -> bytes:
        """``n`` bytes (fewer only at the end of the connection), or, for ``None``, what is
        decrypted already or else the next message: the stock session's contract."""
        if n == 0:
            return b""
        async with self._read_lock:
            plain = self._plain
            wanted = 1 if n is None else n
            while len(plain) < wanted:
                if not await self._receive():
                    return self._at_eof(n)
            if n is None or n >= len(plain):
                data = bytes(plain)
                plain.clear()
            else:
                data = bytes(plain[:n])
                del plain[:n]  # cheap: CPython drops a bytearray's head in O(1)
            return data

    def _at_eof(self, n: int | None) -> bytes:
        """The connection ended: a partial read returns what is left, an empty one raises."""
        if self._plain:
            data = bytes(self._plain)
            self._plain.clear()
            return data
        raise IncompleteReadError(
            "Connection closed during read operation",
            expected_bytes=n or 1,
            received_bytes=len(self._inbox),  # 0: a clean close between messages
        )

    async def _receive(self) -> bool:
        """Read from the socket and decrypt the whole messages now present; False at EOF."""
        if self._eof:
            return False
        data = await self._raw.read(RECV_BYTES)
        if not data:
            self._eof = True
            return False
        inbox = self._inbox
        inbox += data
        start = 0
        available = len(inbox)
        with memoryview(inbox) as view:
            while available - start >= _LENGTH_BYTES:
                length = (inbox[start] << 8) | inbox[start + 1]
                end = start + _LENGTH_BYTES + length
                if end > available:
                    break
                self._plain += self._decrypt(view[start + _LENGTH_BYTES : end])
                start = end
        if start:
            del inbox[:start]
        return True

    def _decrypt(self, message: memoryview) -> bytes:
        if self._recv_nonce >= _MAX_NONCE:
            raise NoiseDecryptError("Noise receive counter exhausted")
        try:
            plaintext = self._recv_cipher.decrypt(_nonce(self._recv_nonce), message, None)
        except InvalidTag:
            raise NoiseDecryptError("a Noise message failed authentication") from None
        self._recv_nonce += 1
        return plaintext

    # --- writing --------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        async with self._write_lock:
            pieces: list[bytes] = []
            view = memoryview(data)
            offset = 0
            while True:  # an empty write is one empty message, as the stock session sends
                piece = view[offset : offset + MAX_PLAINTEXT_LENGTH]
                if self._send_nonce >= _MAX_NONCE:
                    raise IOException("Noise send counter exhausted")
                ciphertext = self._send_cipher.encrypt(_nonce(self._send_nonce), piece, None)
                self._send_nonce += 1
                pieces.append(len(ciphertext).to_bytes(_LENGTH_BYTES, "big"))
                pieces.append(ciphertext)
                offset += len(piece)
                if offset >= len(data):
                    break
            payload = b"".join(pieces)
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + WRITE_SHIELD_TIMEOUT
                await self._raw.write(payload)
            if scope.cancelled_caught:
                raise IOException(f"a Noise write did not finish in {WRITE_SHIELD_TIMEOUT:g} s")


def upgrade_session(session: ISecureConn) -> ISecureConn:
    """The fast session for a finished stock Noise session, or the session as it is."""
    if type(session) is not SecureSession:
        return session
    conn = session.conn
    if not isinstance(conn, NoiseTransportReadWriter) or session.high_watermark:
        return session
    protocol = conn.noise_state.noise_protocol
    send, recv = protocol.cipher_state_encrypt, protocol.cipher_state_decrypt
    raw = getattr(conn.read_writer, "read_write_closer", None)
    if raw is None or not all(
        # noiseprotocol's cipher wrapper (a libp2p dependency, not ours): checked by name
        type(getattr(state, "cipher", None)).__name__ == "ChaCha20Cipher"
        and isinstance(getattr(state, "k", None), bytes)
        and isinstance(getattr(state, "n", None), int)
        for state in (send, recv)
    ):
        logger.debug("keeping the stock Noise session (not ChaCha20-Poly1305 or not ready)")
        return session
    return FastNoiseSession(session, raw, send.k, send.n, recv.k, recv.n)


class FastNoiseTransport(NoiseTransport):
    """py-libp2p's Noise transport whose finished sessions are ``FastNoiseSession``s."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return upgrade_session(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return upgrade_session(await super().secure_outbound(conn, peer_id))
