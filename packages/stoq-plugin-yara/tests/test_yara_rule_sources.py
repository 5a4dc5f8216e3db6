"""Where rules come from: a file, a directory, a compiled file; and the errors when they are bad."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yara

from stoq_core import Stoq, StoqPluginException
from stoq_core.testing import scan_sync

BROKEN = """rule fine { condition: true }

rule broken
{
    condition: undefined_thing
}
"""


def matched(stoq: Stoq, content: bytes) -> list[tuple[str, str]]:
    response = scan_sync(stoq, content)
    assert response.errors == []
    return [(m["namespace"], m["rule"]) for m in response.results[0].workers["yara"]["matches"]]


def test_a_directory_compiles_each_rule_file_in_a_namespace_named_after_it(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str], tmp_path: Path
) -> None:
    write_rules("office.yar", "rule seen { condition: true }")
    write_rules("malware.yara", "rule seen { condition: true }")
    write_rules("README.txt", "not a rule file, so not compiled")
    stoq = make_stoq({"worker_rules": str(tmp_path / "rules")}, always_dispatch=["yara"])

    assert sorted(matched(stoq, b"x")) == [("malware", "seen"), ("office", "seen")]


def test_a_compiled_rules_file_is_loaded(make_stoq: Callable[..., Stoq], tmp_path: Path) -> None:
    compiled = tmp_path / "compiled.yarc"
    yara.compile(source='rule precompiled { strings: $a = "abc" condition: $a }').save(
        str(compiled)
    )
    stoq = make_stoq({"worker_rules": str(compiled)}, always_dispatch=["yara"])

    assert matched(stoq, b"xxabcxx") == [("default", "precompiled")]


def test_a_compiled_rules_file_gets_the_externals_at_match_time(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    compiled = tmp_path / "compiled.yarc"
    rules = yara.compile(source='rule tagged { condition: team == "red" }', externals={"team": ""})
    rules.save(str(compiled))
    stoq = make_stoq(
        {"worker_rules": str(compiled), "externals": {"team": "red"}}, always_dispatch=["yara"]
    )

    assert matched(stoq, b"x") == [("default", "tagged")]


def test_a_syntax_error_stops_construction_naming_file_and_line(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    path = write_rules("broken.yar", BROKEN)

    with pytest.raises(StoqPluginException) as error:
        make_stoq({"dispatch_rules": path}, dispatchers=["yara"])

    message = str(error.value)
    assert f"{path}(5)" in message
    assert "dispatch_rules" in message
    assert "undefined_thing" in message


def test_a_syntax_error_in_a_rules_directory_names_the_file(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str], tmp_path: Path
) -> None:
    write_rules("good.yar", "rule fine { condition: true }")
    bad = write_rules("bad.yar", BROKEN)

    with pytest.raises(StoqPluginException, match=r"worker_rules: .*bad\.yar\(5\)") as error:
        make_stoq({"worker_rules": str(tmp_path / "rules")}, always_dispatch=["yara"])

    assert bad in str(error.value)


def test_a_missing_rules_file_stops_construction_naming_it(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "rules.yar"

    with pytest.raises(StoqPluginException) as error:
        make_stoq({"dispatch_rules": str(missing)}, dispatchers=["yara"])

    assert f"dispatch_rules: {missing}: no such file or directory" in str(error.value)


def test_a_directory_without_rule_files_is_an_error(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(StoqPluginException, match=r"holds no \.yar or \.yara files"):
        make_stoq({"worker_rules": str(tmp_path / "empty")}, always_dispatch=["yara"])


def test_two_files_claiming_one_namespace_are_an_error(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str], tmp_path: Path
) -> None:
    write_rules("same.yar", "rule a { condition: true }")
    write_rules("same.yara", "rule b { condition: true }")

    with pytest.raises(StoqPluginException, match="would share the namespace 'same'"):
        make_stoq({"worker_rules": str(tmp_path / "rules")}, always_dispatch=["yara"])


def test_a_file_that_looks_compiled_but_is_not_is_an_error(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    fake = tmp_path / "fake.yarc"
    fake.write_bytes(b"YARA but not really compiled rules")

    with pytest.raises(StoqPluginException, match="not a compiled rules file"):
        make_stoq({"worker_rules": str(fake)}, always_dispatch=["yara"])


@pytest.mark.parametrize(
    ("externals", "complaint"),
    [
        ("{not json", "must be a JSON object (dict), not '{not json'"),
        ("[1, 2]", "must be a JSON object"),
        ('{"nested": {"a": 1}}', "'nested' must be a string, number or boolean"),
    ],
    ids=["not-json", "not-an-object", "nested-value"],
)
def test_bad_externals_are_a_one_line_error(
    make_stoq: Callable[..., Stoq], externals: str, complaint: str
) -> None:
    with pytest.raises(StoqPluginException, match="externals") as error:
        make_stoq({"externals": externals}, always_dispatch=["yara"])

    assert complaint in str(error.value)
    assert "\n" not in str(error.value)


def test_a_non_number_strings_limit_is_an_error(make_stoq: Callable[..., Stoq]) -> None:
    with pytest.raises(
        StoqPluginException,
        match=r"option 'strings_limit' must be a whole number \(int\), not 'lots'",
    ):
        make_stoq({"strings_limit": "lots"}, always_dispatch=["yara"])


def test_a_non_number_timeout_is_an_error(make_stoq: Callable[..., Stoq]) -> None:
    # stoQ's core reads the same option first (it bounds the import), so the message is its own.
    with pytest.raises(StoqPluginException, match=r"timeout must be a number of seconds.*'long'"):
        make_stoq({"timeout": "long"}, always_dispatch=["yara"])
