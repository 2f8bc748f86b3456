"""Secrets never survive into a message: URL credentials and secret-named variables."""

from __future__ import annotations

from elt_repo.redact import redact, secret_values

ENV = {
    "GITHUB_TOKEN": "ghp_abcdefghijklmnop",
    "SHOP_DB_PASSWORD": "s3cret-pw",
    "WAREHOUSE_API_KEY": "key-123456",
    "SHORT_TOKEN": "abc",
    "HOME": "/root",
}


def test_url_credentials_and_secret_values_are_masked() -> None:
    text = (
        "fetch https://x-access-token:ghp_abcdefghijklmnop@github.com/acme/p.git failed; "
        "postgres://loader:s3cret-pw@db:5432/shop refused; header key-123456"
    )
    assert redact(text, ENV) == (
        "fetch https://***@github.com/acme/p.git failed; "
        "postgres://***@db:5432/shop refused; header ***"
    )


def test_plain_text_and_short_or_unnamed_values_are_left_alone() -> None:
    text = "abc in /root at https://github.com/acme/p.git"
    assert redact(text, ENV) == text
    assert secret_values(ENV) == ["ghp_abcdefghijklmnop", "key-123456", "s3cret-pw"]
