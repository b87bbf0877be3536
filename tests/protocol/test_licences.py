"""Licences: which ones allow republishing, and what each lets people do, in words."""

from __future__ import annotations

import pytest

from p2pshare.protocol.licences import (
    ALL_RIGHTS_RESERVED,
    KNOWN_LICENCES,
    allows_redistribution,
    licence_terms,
    normalise_licence,
)


@pytest.mark.parametrize("licence", sorted(KNOWN_LICENCES))
def test_every_known_licence_has_a_sentence_that_agrees_with_the_republish_rule(
    licence: str,
) -> None:
    terms = licence_terms(licence)
    assert terms.endswith(".") and terms[0].isupper()
    assert ("not republish" in terms) != allows_redistribution(licence)


def test_the_terms_name_each_limit_of_a_creative_commons_licence() -> None:
    terms = licence_terms("CC-BY-NC-ND-4.0")
    assert "not for commercial use" in terms and "unchanged" in terms
    assert "same licence" in licence_terms("CC-BY-SA-4.0")
    assert "(" not in licence_terms("CC-BY-4.0")


def test_an_unknown_licence_cannot_be_republished_and_says_so() -> None:
    assert not allows_redistribution("My-Own-Licence")
    assert "not a licence p2pshare knows" in licence_terms("My-Own-Licence")
    assert normalise_licence(" cc-by-4.0 ") == "CC-BY-4.0"
    assert normalise_licence(ALL_RIGHTS_RESERVED.upper()) == ALL_RIGHTS_RESERVED
