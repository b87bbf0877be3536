"""Every limit a peer's input is checked against, in one place so they are easy to audit."""

RECORD_VERSION = 1
MAX_RECORD_BYTES = 64 * 1024  # whole wire form; gossip frames must stay under 64 KiB
# Gossip message = record + pubsub envelope (a few hundred bytes) inside one 64 KiB Yamux frame;
# larger records are valid but travel by sync only.
MAX_GOSSIP_RECORD_BYTES = 60 * 1024
MAX_FUTURE_SKEW_MS = 10 * 60 * 1000  # created_ms may be at most this far ahead of our clock
MAX_CREATED_MS = 2**53  # keeps timestamps exact in JSON and other languages' doubles
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_COMMUNITY_CHARS = 64
MAX_KIND_CHARS = 16
MAX_BODY_DEPTH = 4  # nesting of lists/maps inside a body
MAX_REPOST_DEPTH = 4  # a repost of a repost of ... at most this deep

MAX_NAME_CHARS = 64
MAX_ABOUT_CHARS = 2_000
MAX_URL_CHARS = 512
MAX_LOCATION_CHARS = 128
MAX_TITLE_CHARS = 256
MAX_AUTHORS = 16
MAX_AUTHOR_CHARS = 128
MAX_DESCRIPTION_CHARS = 8_000
MAX_MIME_CHARS = 128
MAX_FILENAME_CHARS = 255
MAX_LICENCE_CHARS = 64
MAX_REC_TEXT_CHARS = 4_000
MAX_SUBJECT_TEXT_CHARS = 512
MAX_NOTE_CHARS = 2_000
MAX_DOC_SIZE = 2**44  # 16 TiB: far beyond the 200 MB documents we expect, well inside int64

CHUNK_SIZE = 256 * 1024
MIN_CHUNK_SIZE = 16 * 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
MAX_MANIFEST_CHUNKS = 2**16  # chunks per document: one manifest must fit in one transfer frame
# canonical msgpack [size, chunk_size, [hash, ...]]: array header + uint64 + uint32 + array32 header
# + per hash a bin8 header (2 bytes) and 32 bytes
MAX_MANIFEST_BYTES = 1 + 9 + 5 + 5 + MAX_MANIFEST_CHUNKS * (2 + 32)
