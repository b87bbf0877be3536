"""Licences a document may carry: SPDX ids we know, and which of them allow republishing.

Republishing in p2pshare is verbatim, credited, and not sold, so ND and NC licences allow it;
``all-rights-reserved`` does not.
"""

ALL_RIGHTS_RESERVED = "all-rights-reserved"

_REDISTRIBUTABLE = frozenset(
    {
        "CC0-1.0",
        "CC-BY-4.0",
        "CC-BY-SA-4.0",
        "CC-BY-NC-4.0",
        "CC-BY-ND-4.0",
        "CC-BY-NC-SA-4.0",
        "CC-BY-NC-ND-4.0",
        "CC-BY-3.0",
        "CC-BY-SA-3.0",
        "CC-PDDC",
        "PDDL-1.0",
        "ODbL-1.0",
        "ODC-By-1.0",
        "GFDL-1.3-or-later",
        "GFDL-1.3-only",
        "OFL-1.1",
        "MIT",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "Apache-2.0",
        "MPL-2.0",
        "GPL-2.0-or-later",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "LGPL-3.0-or-later",
        "AGPL-3.0-or-later",
        "Unlicense",
        "0BSD",
    }
)

KNOWN_LICENCES = frozenset(_REDISTRIBUTABLE | {ALL_RIGHTS_RESERVED})
_BY_LOWER = {lic.lower(): lic for lic in KNOWN_LICENCES}


def normalise_licence(text: str) -> str | None:
    """The canonical spelling of a known licence id, or None if we do not know it."""
    return _BY_LOWER.get(text.strip().lower())


def allows_redistribution(licence: str) -> bool:
    return licence in _REDISTRIBUTABLE


def licence_terms(licence: str) -> str:
    """What a licence lets people here do, in one sentence for people."""
    if licence == ALL_RIGHTS_RESERVED:
        return (
            "The author keeps every right: you may read it and recommend it, but not republish it."
        )
    if not allows_redistribution(licence):
        return "It is not a licence p2pshare knows; it cannot be republished."
    limits = [
        words
        for mark, words in (
            ("-NC", "not for commercial use"),
            ("-ND", "unchanged"),
            ("-SA", "adaptations under the same licence"),
        )
        if mark in licence
    ]
    extra = f" ({', '.join(limits)})" if limits else ""
    return f"Anyone may republish it, crediting the author{extra}."
