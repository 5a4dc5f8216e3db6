"""Each archive format is recognised by its magic bytes and its members come out whole."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from decompress_helpers import (
    bzip2_of,
    extracted,
    gzip_of,
    load,
    lzma_of,
    run,
    sevenzip_of,
    tar_of,
    xz_of,
    zip_of,
)

from stoq_core import StoqPluginException

MEMBERS = {"a.txt": b"alpha\n" * 50, "dir/b.bin": bytes(range(256)) * 8}


@pytest.fixture
def plugin(tmp_path: Path) -> object:
    return load(tmp_path)


@pytest.mark.parametrize(
    "method",
    [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA],
    ids=["stored", "deflate", "bzip2", "lzma"],
)
def test_zip_members_are_extracted(plugin: object, method: int) -> None:
    response = run(plugin, zip_of(MEMBERS, method))
    assert response is not None
    assert response.errors == []
    assert extracted(response) == MEMBERS
    assert response.results["archive_type"] == "zip"


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_tar_members_are_extracted_whatever_the_compression(
    plugin: object, compression: str
) -> None:
    response = run(plugin, tar_of(MEMBERS, compression))
    assert response is not None
    assert response.errors == []
    assert extracted(response) == MEMBERS
    assert response.results["archive_type"] == "tar"


def test_7z_members_are_extracted(plugin: object) -> None:
    response = run(plugin, sevenzip_of(MEMBERS))
    assert response is not None
    assert response.errors == []
    assert extracted(response) == MEMBERS
    assert response.results["archive_type"] == "7z"


@pytest.mark.parametrize(
    ("compress", "archive_type"),
    [(gzip_of, "gzip"), (bzip2_of, "bzip2"), (xz_of, "xz"), (lzma_of, "lzma")],
)
def test_a_single_compressed_stream_is_one_member(
    plugin: object, compress: Callable[[bytes], bytes], archive_type: str
) -> None:
    content = b"single stream\n" * 1000
    response = run(plugin, compress(content))
    assert response is not None
    assert [p.content for p in response.extracted] == [content]
    assert response.results["archive_type"] == archive_type


def test_results_list_each_member_with_its_sizes(plugin: object) -> None:
    archive = zip_of(MEMBERS)
    response = run(plugin, archive)
    assert response is not None
    infos = {i.filename: i for i in zipfile.ZipFile(io.BytesIO(archive)).infolist()}
    assert response.results == {
        "archive_type": "zip",
        "members": [
            {"filename": name, "size": len(content), "compressed_size": infos[name].compress_size}
            for name, content in MEMBERS.items()
        ],
        "truncated": False,
    }


def test_tar_members_have_no_compressed_size(plugin: object) -> None:
    response = run(plugin, tar_of(MEMBERS, "gz"))
    assert response is not None
    assert [m["compressed_size"] for m in response.results["members"]] == [None, None]


def test_directories_are_not_extracted(plugin: object) -> None:
    response = run(plugin, zip_of({"dir/": b"", "dir/file": b"content"}))
    assert response is not None
    assert extracted(response) == {"dir/file": b"content"}


def test_an_empty_member_is_extracted_empty(plugin: object) -> None:
    response = run(plugin, zip_of({"empty": b"", "full": b"x"}))
    assert response is not None
    assert extracted(response) == {"empty": b"", "full": b"x"}


def test_a_gzip_member_is_named_from_the_gzip_header(plugin: object) -> None:
    response = run(plugin, gzip_of(b"data", name="original.txt"), filename="renamed.gz")
    assert response is not None
    assert list(extracted(response)) == ["original.txt"]


def test_a_stream_without_a_name_is_named_after_its_parent_minus_the_extension(
    plugin: object,
) -> None:
    response = run(plugin, bzip2_of(b"data"), filename="report.txt.bz2")
    assert response is not None
    assert list(extracted(response)) == ["report.txt"]


def test_a_stream_with_no_name_anywhere_gets_a_default_name(plugin: object) -> None:
    response = run(plugin, xz_of(b"data"))
    assert response is not None
    assert list(extracted(response)) == ["decompressed"]


def test_the_type_comes_from_magic_bytes_not_the_filename(plugin: object) -> None:
    response = run(plugin, tar_of(MEMBERS, "xz"), filename="looks-like.zip")
    assert response is not None
    assert response.results["archive_type"] == "tar"
    assert extracted(response) == MEMBERS


def test_a_payload_that_is_not_an_archive_gets_no_result(plugin: object) -> None:
    assert run(plugin, b"just some text, not an archive", filename="fake.zip") is None


def test_an_empty_payload_gets_no_result(plugin: object) -> None:
    assert run(plugin, b"") is None


def test_member_names_are_kept_as_data_even_when_they_climb_out(
    plugin: object, tmp_path: Path
) -> None:
    response = run(plugin, tar_of({"../../etc/evil": b"x", "/abs/path": b"y"}))
    assert response is not None
    assert extracted(response) == {"../../etc/evil": b"x", "/abs/path": b"y"}
    assert not (tmp_path.parent.parent / "etc" / "evil").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "maximum_size",
            "lots",
            "option 'maximum_size' must be a whole number \\(int\\), not 'lots'",
        ),
        ("maximum_ratio", "big", "option 'maximum_ratio' must be a number \\(float\\), not 'big'"),
        ("maximum_sise", "1", "has no option 'maximum_sise'.*did you mean 'maximum_size'"),
        ("maximum_count", "0", "option 'maximum_count': 0 must be at least 1"),
        ("maximum_ratio", "0.5", "option 'maximum_ratio': 0.5 must be at least 1"),
        ("passwords", "[1, 2]", "option 'passwords': the JSON must be a list of strings"),
    ],
)
def test_a_bad_option_fails_to_load_with_a_clear_message(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    with pytest.raises(StoqPluginException, match=message):
        load(tmp_path, **{option: value})
