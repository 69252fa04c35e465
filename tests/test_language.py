"""The language guess that sends foreign-language tickets straight to the strong model."""

from __future__ import annotations

import pytest

from connector.classify.language import guess_language, outside


@pytest.mark.parametrize(("text", "expected"), [
    ("I was charged twice for my subscription, can you please look into it?", "en"),
    ("Ich kann mich nicht anmelden, bitte helfen Sie mir mit meinem Konto.", "de"),
    ("Je ne peux pas me connecter à mon compte, merci de votre aide.", "fr"),
    ("No puedo iniciar sesión en mi cuenta, por favor ayúdenme con esto.", "es"),
    ("ログインできません。パスワードをリセットしても同じエラーが出ます。", "other"),
    ("Не могу войти в аккаунт, пароль не подходит уже второй день.", "other"),
    ("Refund?", None),              # too short to tell
    ("SSO SAML SCIM API 502", None),
])
def test_guess(text: str, expected: str | None) -> None:
    assert guess_language(text) == expected


def test_outside_only_when_sure() -> None:
    assert outside("Ich kann mich nicht anmelden, bitte helfen Sie mir.", ["en"])
    assert not outside("Ich kann mich nicht anmelden, bitte helfen Sie mir.", ["en", "de"])
    assert not outside("Refund?", ["en"])
