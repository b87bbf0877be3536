"""Community names: short slugs, one gossip topic each."""

import re

from p2pshare.protocol.limits import MAX_COMMUNITY_CHARS

DEFAULT_COMMUNITY = "public"
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


def is_community(slug: str) -> bool:
    return len(slug) <= MAX_COMMUNITY_CHARS and bool(_SLUG.fullmatch(slug))


def normalise_community(text: str) -> str:
    """Lower-case, spaces and underscores to dashes; raise ValueError if still not a slug."""
    slug = re.sub(r"[\s_]+", "-", text.strip().lower())
    if not is_community(slug):
        raise ValueError(
            f"{text!r} is not a community name: use up to {MAX_COMMUNITY_CHARS} letters, digits "
            "and dashes, e.g. 'bike-repair'"
        )
    return slug
