"""Sealed secrets open only for their organization, purpose and key."""

from __future__ import annotations

import base64

import pytest

from services.common.sealing import Unsealable, seal, unseal

KEY = b"a test secret key"


def test_a_sealed_value_opens_for_its_organization_and_purpose_and_hides_the_text():
    sealed = seal("sk_test_123", "org_a", "stripe_api_key", KEY)
    assert sealed.startswith("v1.") and "sk_test_123" not in sealed
    assert unseal(sealed, "org_a", "stripe_api_key", KEY) == "sk_test_123"
    assert seal("sk_test_123", "org_a", "stripe_api_key", KEY) != sealed  # a fresh nonce each time


@pytest.mark.parametrize(
    ("organization_id", "purpose", "key"),
    [
        ("org_b", "stripe_api_key", KEY),  # another organization's row
        ("org_a", "stripe_webhook_secret", KEY),  # another column
        ("org_a", "stripe_api_key", b"another key"),  # another BXB_SECRET_KEY
    ],
)
def test_a_sealed_value_does_not_open_elsewhere(organization_id, purpose, key):
    sealed = seal("sk_test_123", "org_a", "stripe_api_key", KEY)
    with pytest.raises(Unsealable):
        unseal(sealed, organization_id, purpose, key)


def test_a_tampered_or_unknown_sealed_value_does_not_open():
    sealed = seal("whsec_1", "org_a", "stripe_webhook_secret", KEY)
    raw = bytearray(base64.urlsafe_b64decode(sealed.removeprefix("v1.")))
    raw[-1] ^= 1
    tampered = "v1." + base64.urlsafe_b64encode(bytes(raw)).decode()
    for bad in (tampered, "v1.not base64!", "v2." + sealed.removeprefix("v1.")):
        with pytest.raises(Unsealable):
            unseal(bad, "org_a", "stripe_webhook_secret", KEY)


def test_the_default_key_is_bxb_secret_key(monkeypatch):
    monkeypatch.setenv("BXB_SECRET_KEY", "from the environment")
    sealed = seal("x", "org_a", "p")
    assert unseal(sealed, "org_a", "p", b"from the environment") == "x"
    assert unseal(sealed, "org_a", "p") == "x"
