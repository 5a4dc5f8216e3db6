"""Declared plugin options (``stoq_core.Option``), ``$env:`` values, inline comments in stoq.cfg,
and the ``[core]`` key check, through the core API (issue 15, items 1 and 4)."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from core_helpers import scan
from option_fakes import OPTION_FAKES

import stoq_core._manager
from stoq_core import (
    Option,
    Stoq,
    StoqException,
    StoqPluginException,
    StoqPluginNotFound,
)

MakeStoq = Callable[..., Stoq]


@pytest.fixture
def make_stoq(install_plugins: Callable[..., Path], tmp_path: Path) -> MakeStoq:
    """A ``Stoq`` with the option fakes installed as a distribution's entry points."""
    install_plugins(OPTION_FAKES, dist="stoq-test-option-fakes")

    def make(**kwargs: Any) -> Stoq:
        kwargs.setdefault("base_dir", str(tmp_path))
        kwargs.setdefault("log_dir", None)
        kwargs.setdefault("plugin_dir_list", [])
        return Stoq(**kwargs)

    return make


@pytest.fixture
def stoq_cfg(tmp_path: Path) -> Callable[[str], str]:
    """``stoq_cfg(text)``: a stoq.cfg holding ``text``; returns its path."""

    def write(text: str) -> str:
        path = tmp_path / "stoq.cfg"
        path.write_text(text)
        return str(path)

    return write


def seen(stoq: Stoq, name: str = "declared") -> dict[str, Any]:
    plugin = stoq.load_plugin(name)
    return dict(plugin.seen)


# -- declaring -------------------------------------------------------------------------------


def test_an_option_is_a_name_a_type_a_default_and_a_help() -> None:
    option = Option("threshold", int, default=16, help="NUL bytes")

    assert (option.name, option.type, option.default, option.help) == (
        "threshold",
        int,
        16,
        "NUL bytes",
    )
    assert Option("path").type is str and Option("path").default is None


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"name": "MaxSize"}, "must be lowercase"),
        ({"name": "a b"}, "must be lowercase"),
        ({"name": "n", "type": tuple}, "type must be one of str, int, float, bool, list"),
        ({"name": "n", "type": int, "default": "16"}, "default '16' is not a int"),
        ({"name": "n", "type": int, "default": True}, "default True is not a int"),
        ({"name": "n", "type": list, "default": "a, b"}, "is not a list"),
    ],
)
def test_a_malformed_declaration_is_refused_where_it_is_written(
    kwargs: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        Option(**kwargs)


def test_options_mixing_declarations_with_other_things_fail_to_load(make_stoq: MakeStoq) -> None:
    with pytest.raises(StoqPluginException, match=r"its options must all be stoq_core\.Option"):
        make_stoq(always_dispatch=["mixed"])


# -- defaults and values ---------------------------------------------------------------------


def test_declared_defaults_are_read_through_the_getters_without_fallbacks(
    make_stoq: MakeStoq,
) -> None:
    assert seen(make_stoq()) == {
        "threshold": 16,
        "ratio": 1.5,
        "strict": False,
        "labels": None,  # no default declared: unset, as the plugin's fallback says
        "kinds": ["a", "b"],
        "extra": None,
        "mode": "fast",
    }


def test_given_values_of_the_right_type_beat_the_defaults(make_stoq: MakeStoq) -> None:
    stoq = make_stoq(
        plugin_opts={
            "declared": {
                "threshold": "4",
                "ratio": 2,  # a Python value, stored as text the getter reads back
                "strict": "yes",
                "labels": ["x", "y"],
                "kinds": "c",
                "extra": '{"a": 1}',
                "mode": "slow",
            }
        }
    )

    assert seen(stoq) == {
        "threshold": 4,
        "ratio": 2.0,
        "strict": True,
        "labels": ["x", "y"],
        "kinds": ["c"],
        "extra": {"a": 1},
        "mode": "slow",
    }


def test_a_v3_base_class_subclass_declares_its_options_the_same_way(make_stoq: MakeStoq) -> None:
    stoq = make_stoq(always_dispatch=["declared_v3"])
    _, results = scan(stoq)
    assert results[b"root"].workers["declared_v3"] == {"level": 1}

    with pytest.raises(StoqPluginException, match=r"has no option 'levle'.*did you mean 'level'"):
        make_stoq(plugin_opts={"declared_v3": {"levle": "2"}}).load_plugin("declared_v3")


# -- refusals --------------------------------------------------------------------------------


def test_an_unknown_option_given_at_the_call_is_refused_with_did_you_mean(
    make_stoq: MakeStoq,
) -> None:
    stoq = make_stoq(plugin_opts={"declared": {"treshold": "4"}})

    with pytest.raises(StoqPluginException) as raised:
        stoq.load_plugin("declared")

    assert str(raised.value) == (
        "plugin 'declared' has no option 'treshold' (from --plugin-opts / plugin_opts); "
        "did you mean 'threshold'? (its options: threshold, ratio, strict, labels, kinds, "
        "extra, mode; see 'stoq plugin info declared')"
    )


def test_an_unknown_option_in_stoq_cfg_names_its_section(
    make_stoq: MakeStoq, stoq_cfg: Callable[[str], str]
) -> None:
    config_file = stoq_cfg("[declared]\nlables = a, b\n")

    with pytest.raises(StoqPluginException, match=r"'lables' \(from stoq.cfg \[declared\]\); "):
        make_stoq(config_file=config_file, always_dispatch=["declared"])


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("threshold", "lots", "a whole number (int)"),
        ("threshold", "", "a whole number (int)"),
        ("ratio", "half", "a number (float)"),
        ("strict", "perhaps", "true or false (bool)"),
        ("extra", "[1, 2]", "a JSON object (dict)"),
        ("extra", "{not json", "a JSON object (dict)"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line_naming_plugin_option_value_and_type(
    make_stoq: MakeStoq, option: str, value: str, expected: str
) -> None:
    with pytest.raises(StoqPluginException) as raised:
        make_stoq(plugin_opts={"declared": {option: value}}, always_dispatch=["declared"])

    assert str(raised.value) == (
        f"plugin 'declared': option {option!r} must be {expected}, not {value!r}"
    )


def test_the_options_the_core_reads_are_accepted_by_every_declaring_plugin(
    make_stoq: MakeStoq,
) -> None:
    stoq = make_stoq(plugin_opts={"no_options": {"timeout": "5", "required_workers": ""}})
    assert stoq.plugins.load("no_options").timeout == 5.0


def test_a_plugin_declaring_no_options_refuses_any_of_its_own(make_stoq: MakeStoq) -> None:
    stoq = make_stoq(plugin_opts={"no_options": {"verbose": "true"}})

    with pytest.raises(StoqPluginException, match=r"has no option 'verbose'.*none of its own"):
        stoq.load_plugin("no_options")


@pytest.mark.parametrize("name", ["undeclared", "other_options"])
def test_a_plugin_that_declares_nothing_gets_every_option_unchecked(
    make_stoq: MakeStoq, name: str
) -> None:
    stoq = make_stoq(plugin_opts={name: {"anything": "at all", "threshold": "lots"}})

    assert stoq.load_plugin(name).given == {"anything": "at all", "threshold": "lots"}
    assert stoq.plugins.declared_options(name) is None


def test_options_for_a_plugin_that_is_not_installed_stop_the_engine(make_stoq: MakeStoq) -> None:
    with pytest.raises(StoqPluginNotFound) as raised:
        make_stoq(plugin_opts={"declred": {"threshold": "4"}})

    assert isinstance(raised.value, StoqException)
    message = str(raised.value)
    assert message.startswith(
        "options are given for plugin 'declred', which is not installed; "
        "did you mean 'declared'? (installed plugins: "
    )
    assert "\n" not in message


def test_a_stoq_cfg_section_for_a_plugin_not_installed_is_not_checked(
    make_stoq: MakeStoq, stoq_cfg: Callable[[str], str]
) -> None:
    # One stoq.cfg may serve several installations, and plugin commands read sections too.
    config_file = stoq_cfg("[somewhere_else]\nurl = x\n")
    assert make_stoq(config_file=config_file).plugins.loaded == {}


def test_options_are_checked_once_at_load_never_per_payload(
    make_stoq: MakeStoq, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    check = stoq_core._manager.check_options

    def counting(plugin: str, *args: Any) -> None:
        calls.append(plugin)
        check(plugin, *args)

    monkeypatch.setattr(stoq_core._manager, "check_options", counting)
    stoq = make_stoq(always_dispatch=["declared"])
    for content in (b"one", b"two", b"three"):
        scan(stoq, content)

    assert calls == ["declared"]


# -- values from the environment -------------------------------------------------------------


def test_an_env_value_in_plugin_opts_is_the_environment_variable(
    make_stoq: MakeStoq, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOQ_TEST_THRESHOLD", "7")
    stoq = make_stoq(plugin_opts={"declared": {"threshold": "$env:STOQ_TEST_THRESHOLD"}})

    assert seen(stoq)["threshold"] == 7


def test_an_env_value_in_a_stoq_cfg_plugin_section_is_read_when_the_plugin_loads(
    make_stoq: MakeStoq, stoq_cfg: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STOQ_TEST_UNSET", raising=False)
    config_file = stoq_cfg("[undeclared]\nsecret = $env:STOQ_TEST_UNSET\n")
    stoq = make_stoq(config_file=config_file)  # not loaded yet: an unset variable is no matter

    with pytest.raises(StoqPluginException) as raised:
        stoq.load_plugin("undeclared")
    assert str(raised.value) == (
        "plugin 'undeclared': option 'secret' is $env:STOQ_TEST_UNSET, but the environment "
        "variable STOQ_TEST_UNSET is not set"
    )

    monkeypatch.setenv("STOQ_TEST_UNSET", "hunter2")
    assert make_stoq(config_file=config_file).load_plugin("undeclared").given == {
        "secret": "hunter2"
    }


def test_an_env_value_in_core_is_read_when_the_engine_starts(
    make_stoq: MakeStoq, stoq_cfg: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = stoq_cfg("[core]\nmax_recursion = $env:STOQ_TEST_DEPTH\n")
    monkeypatch.setenv("STOQ_TEST_DEPTH", "3")
    assert make_stoq(config_file=config_file).max_recursion == 3

    monkeypatch.delenv("STOQ_TEST_DEPTH")
    with pytest.raises(StoqException, match="environment variable STOQ_TEST_DEPTH is not set"):
        make_stoq(config_file=config_file)


def test_only_a_whole_env_value_is_replaced(
    make_stoq: MakeStoq, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOQ_TEST_MODE", "slow")
    stoq = make_stoq(plugin_opts={"declared": {"mode": "fast $env:STOQ_TEST_MODE"}})
    assert seen(stoq)["mode"] == "fast $env:STOQ_TEST_MODE"


# -- stoq.cfg: inline comments and [core] keys -----------------------------------------------


def test_inline_comments_after_whitespace_are_not_part_of_values(
    make_stoq: MakeStoq, stoq_cfg: Callable[[str], str]
) -> None:
    config_file = stoq_cfg(
        "[core]\n"
        "timeout = 30   ; seconds\n"
        "max_payloads = 5 # per request\n"
        "[undeclared]\n"
        "url = http://host/#top\n"
        "password = a;b\n"
        "note = kept ; dropped\n"
        "separator = ;\n"  # a value that starts with one is kept whole, as v3 read it
    )
    stoq = make_stoq(config_file=config_file)

    assert (stoq.timeout, stoq.max_payloads) == (30.0, 5)
    assert stoq.load_plugin("undeclared").given == {
        "url": "http://host/#top",
        "password": "a;b",
        "note": "kept",
        "separator": ";",
    }


def test_inline_comments_in_a_stoq_file_are_not_part_of_its_options(
    tmp_path: Path, make_stoq: MakeStoq
) -> None:
    folder = tmp_path / "plugins" / "commented"
    folder.mkdir(parents=True)
    (folder / "commented.stoq").write_text(
        "[Core]\nName = commented   ; the plugin's name\nModule = commented\n\n"
        "[options]\ngreeting = hello  ; said to every payload\n"
    )
    (folder / "commented.py").write_text(
        "from stoq_core import WorkerResponse\n"
        "from stoq_core.plugins import WorkerPlugin\n\n\n"
        "class Commented(WorkerPlugin):\n"
        "    async def scan(self, payload, request):\n"
        "        return WorkerResponse({'greeting': self.config.get('options', 'greeting')})\n"
    )
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "plugins")], always_dispatch=["commented"])

    _, results = scan(stoq)
    assert results[b"root"].workers["commented"] == {"greeting": "hello"}


def test_a_misspelt_core_key_is_refused_with_did_you_mean(
    make_stoq: MakeStoq, stoq_cfg: Callable[[str], str]
) -> None:
    config_file = stoq_cfg("[core]\nalways_dispach = declared\n")

    with pytest.raises(StoqException) as raised:
        make_stoq(config_file=config_file)

    assert str(raised.value) == (
        f"{config_file}: [core] has no key 'always_dispach'; did you mean 'always_dispatch'?"
    )


def test_a_core_key_like_no_known_one_is_a_warning_and_ignored(
    make_stoq: MakeStoq, stoq_cfg: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    config_file = stoq_cfg("[core]\ncolour_scheme = dark\nalways_dispatch = declared\n")

    with caplog.at_level(logging.WARNING, logger="stoq"):
        stoq = make_stoq(config_file=config_file)

    assert stoq.always_dispatch == ["declared"]
    assert f"{config_file}: [core] colour_scheme is not a stoQ setting; it is ignored" in (
        caplog.text
    )


# -- the plugins of this repository ----------------------------------------------------------


def _repository_plugins() -> Iterator[str]:
    for dist in ("hash", "yara", "decompress", "filedir", "smtp", "redis"):
        try:
            importlib.metadata.distribution(f"stoq-plugin-{dist}")
        except importlib.metadata.PackageNotFoundError:
            continue
        yield dist


@pytest.mark.parametrize("name", list(_repository_plugins()))
def test_every_plugin_of_this_repository_declares_its_options(name: str, tmp_path: Path) -> None:
    stoq = Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[])

    declared = stoq.plugins.declared_options(name)

    assert declared, f"stoq-plugin-{name} declares no options"
    assert all(option.help for option in declared), f"{name}: an option without help"
