"""Encrypted members are opened with the configured passwords, tried in order."""

from __future__ import annotations

from pathlib import Path

import pytest
from decompress_helpers import encrypted_zip, error_texts, extracted, load, run, sevenzip_of, zip_of

SECRETS = {"a.txt": b"first secret " * 40, "b.txt": b"second secret"}


def test_the_right_zip_password_is_found_among_several(tmp_path: Path) -> None:
    plugin = load(tmp_path, passwords=["wrong", "infected", "other"])
    response = run(plugin, encrypted_zip(SECRETS, "infected"))
    assert response is not None
    assert response.errors == []
    assert extracted(response) == SECRETS
    assert response.results["truncated"] is False


def test_no_right_zip_password_is_an_error_per_member(tmp_path: Path) -> None:
    plugin = load(tmp_path, passwords=["wrong", "other"])
    response = run(plugin, encrypted_zip(SECRETS, "infected"))
    assert response is not None
    assert error_texts(response) == [
        "member 'a.txt' is encrypted and none of the 2 passwords given opened it",
        "member 'b.txt' is encrypted and none of the 2 passwords given opened it",
    ]
    assert response.extracted == []
    assert response.results["truncated"] is True


def test_an_encrypted_zip_without_passwords_configured_says_so(tmp_path: Path) -> None:
    response = run(load(tmp_path), encrypted_zip({"a.txt": b"x"}, "infected"))
    assert response is not None
    assert error_texts(response) == [
        "member 'a.txt' is encrypted and no passwords are configured (option 'passwords')"
    ]


def test_passwords_with_commas_are_given_as_a_json_list(tmp_path: Path) -> None:
    plugin = load(tmp_path, passwords='["no", "a,b"]')
    response = run(plugin, encrypted_zip(SECRETS, "a,b"))
    assert response is not None
    assert extracted(response) == SECRETS


def test_unencrypted_members_of_a_zip_need_no_password(tmp_path: Path) -> None:
    plugin = load(tmp_path, passwords=["unused"])

    response = run(plugin, zip_of({"plain.txt": b"plain"}))
    assert response is not None
    assert extracted(response) == {"plain.txt": b"plain"}


@pytest.mark.timeout(60)  # py7zr derives each password's AES key in pure Python: slow
def test_the_right_7z_password_is_found_after_a_wrong_one(tmp_path: Path) -> None:
    plugin = load(tmp_path, passwords=["wrong", "infected"])
    response = run(plugin, sevenzip_of(SECRETS, password="infected"))
    assert response is not None
    assert response.errors == []
    assert extracted(response) == SECRETS


def test_an_encrypted_7z_without_passwords_configured_says_so(tmp_path: Path) -> None:
    response = run(load(tmp_path), sevenzip_of(SECRETS, password="infected"))
    assert response is not None
    assert error_texts(response) == [
        "the 7z archive is encrypted and no passwords are configured (option 'passwords')"
    ]
    assert response.extracted == []
