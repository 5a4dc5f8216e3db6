"""The plugin contract: entry points, configuration, and discovery that one plugin cannot break."""

from __future__ import annotations

import logging
import sys

import pytest
from core_helpers import scan

from stoq_core import Stoq, StoqException, StoqPluginException, StoqPluginNotFound
from stoq_core.hookspecs import HOOK_NAMES


def test_an_entry_point_class_is_constructed_with_its_config_and_registered_by_name(make_stoq):
    stoq = make_stoq()
    plugin = stoq.load_plugin("worker")
    assert type(plugin).__name__ == "Worker"
    assert plugin.name == "worker"  # read from config['Core']['Name']
    assert stoq.plugins.pm.get_plugin("worker") is plugin


def test_loading_a_plugin_twice_returns_the_same_instance(make_stoq):
    stoq = make_stoq(always_dispatch=["worker"])
    assert stoq.load_plugin("worker") is stoq.load_plugin("worker")
    assert make_stoq().load_plugin("worker") is not stoq.load_plugin("worker")


def test_plugins_named_at_construction_are_loaded_then(make_stoq):
    stoq = make_stoq(
        always_dispatch=["worker"],
        dispatchers=["dispatcher"],
        connectors=["connector"],
        decorators=["decorator"],
        dest_archivers=["archiver"],
        source_archivers=["archiver2"],
        providers=["provider"],
    )
    assert set(stoq.plugins.loaded) == {
        "worker",
        "dispatcher",
        "connector",
        "decorator",
        "archiver",
        "archiver2",
        "provider",
    }


def test_a_missing_plugin_named_at_construction_raises_not_found(make_stoq):
    with pytest.raises(StoqPluginNotFound) as raised:
        make_stoq(always_dispatch=["wroker"])
    message = str(raised.value)
    assert "'wroker' is not installed" in message
    assert "did you mean 'worker'" in message
    assert "dispatcher" in message  # the installed ones are listed


def test_a_plugin_that_cannot_play_its_role_is_refused_at_construction(make_stoq):
    with pytest.raises(StoqPluginException, match="does not implement 'get_dispatches'"):
        make_stoq(dispatchers=["worker"])


def test_only_the_plugins_a_run_names_are_imported(make_stoq, install_plugins):
    install_plugins({"quiet": "fake_import_marker:Quiet"})
    sys.modules.pop("fake_import_marker", None)
    stoq = make_stoq(always_dispatch=["worker"])
    scan(stoq)
    assert "fake_import_marker" not in sys.modules
    stoq.load_plugin("quiet")
    assert "fake_import_marker" in sys.modules


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_work(make_stoq, install_plugins):
    install_plugins({"broken": "fake_broken_import:Plugin"}, dist="stoq-plugin-broken")
    stoq = make_stoq(always_dispatch=["worker"])
    with pytest.raises(StoqPluginException) as raised:
        stoq.load_plugin("broken")
    assert "'broken'" in str(raised.value)
    assert "stoq-plugin-broken" in str(raised.value)
    assert isinstance(raised.value.__cause__, ImportError)  # the plugin's own, kept
    assert "not_a_real_dependency_of_anything" in str(raised.value)
    response, results = scan(stoq, start=["broken"])
    assert results[b"root"].workers == {"worker": {"worker": "worker"}}
    assert [e.plugin_name for e in response.errors] == ["broken"]
    info = stoq.list_plugins()
    assert "not_a_real_dependency_of_anything" in info["broken"].error
    assert info["worker"].error is None


def test_a_plugin_that_fails_to_construct_is_reported(make_stoq, install_plugins):
    install_plugins({"needs_key": "fakes:BrokenConstructor"}, dist="stoq-plugin-needs-key")
    with pytest.raises(
        StoqPluginException,
        match="'needs_key' from distribution stoq-plugin-needs-key failed to start: RuntimeError: needs an API key",
    ) as raised:
        make_stoq(always_dispatch=["needs_key"])
    # The plugin's own exception is its cause: a v3 script that caught it can reach it.
    assert type(raised.value.__cause__) is RuntimeError


def test_two_distributions_claiming_one_name_is_an_error_naming_both(make_stoq, install_plugins):
    install_plugins({"hash": "fakes:Worker"}, dist="stoq-plugin-hash")
    install_plugins({"hash": "fakes:Worker"}, dist="stoq-plugin-otherhash")
    with pytest.raises(StoqPluginException) as raised:
        make_stoq(always_dispatch=["hash"])
    assert "stoq-plugin-hash" in str(raised.value)
    assert "stoq-plugin-otherhash" in str(raised.value)
    assert "stoq-plugin-otherhash" in make_stoq().list_plugins()["hash"].error


def test_a_hookimpl_that_is_not_a_hook_is_an_error_at_load(make_stoq, install_plugins):
    install_plugins({"odd": "fakes:UnknownHook"})
    with pytest.raises(StoqPluginException, match="'scan_harder', which is not a stoQ hook"):
        make_stoq().load_plugin("odd")


def test_a_hookimpl_with_arguments_the_spec_lacks_is_an_error_at_load(make_stoq, install_plugins):
    install_plugins({"verbose": "fakes:ExtraArgument"})
    with pytest.raises(StoqPluginException, match="verbose"):
        make_stoq().load_plugin("verbose")


def test_a_plugin_with_no_hooks_is_an_error_at_load(make_stoq, install_plugins):
    install_plugins({"empty": "fakes:NoHooks"})
    with pytest.raises(StoqPluginException, match="implements none of the stoQ hooks"):
        make_stoq().load_plugin("empty")


def test_list_plugins_reports_version_origin_and_hooks_without_constructing(make_stoq):
    info = make_stoq().list_plugins()
    multi = info["multi"]
    assert (multi.version, multi.origin, multi.kind) == ("1.0", "stoq-test-fakes", "entry point")
    assert multi.hooks == ["get_dispatches", "scan", "save"]
    assert multi.description == "stoq-test-fakes for tests"


def test_plugin_options_at_the_call_beat_stoq_cfg(make_stoq, tmp_path):
    (tmp_path / "stoq.cfg").write_text("[reports_config]\nColour = blue\nsize = 2\nshape = round\n")
    stoq = make_stoq(plugin_opts={"reports_config": {"size": 16}})
    _, results = scan(stoq, start=["reports_config"])
    # Option names are case-insensitive; the call's value wins, the file fills the rest.
    assert results[b"root"].workers["reports_config"] == {
        "colour": "blue",
        "size": "16",
        "shape": "round",
    }


def test_option_getters_parse_string_values(make_stoq):
    stoq = make_stoq(
        plugin_opts={
            "reports_config": {
                "n": "16",
                "on": "yes",
                "names": "a, b ,c",
                "meta": '{"a": 1}',
                "ratio": "2.5",
            }
        }
    )
    config = stoq.load_plugin("reports_config").config
    assert config.getint("options", "n") == 16
    assert config.getboolean("options", "on") is True
    assert config.getlist("options", "names") == ["a", "b", "c"]
    assert config.getset("options", "names") == {"a", "b", "c"}
    assert config.getjson("options", "meta") == {"a": 1}
    assert config.getjson("options", "absent") == {}
    assert config.getfloat("options", "ratio") == 2.5
    assert config.get("options", "absent", fallback="default") == "default"


def test_python_values_in_plugin_opts_read_back_through_the_getters(make_stoq):
    stoq = make_stoq(
        plugin_opts={
            "reports_config": {"names": ["a", "b"], "meta": {"k": [1]}, "flag": False, "n": 3}
        }
    )
    config = stoq.load_plugin("reports_config").config
    assert config.getlist("options", "names") == ["a", "b"]
    assert config.getjson("options", "meta") == {"k": [1]}
    assert config.getboolean("options", "flag") is False
    assert config.getint("options", "n") == 3


def test_core_settings_come_from_stoq_cfg_with_v3_defaults(make_stoq, tmp_path):
    stoq = make_stoq()
    assert (
        stoq.max_queue,
        stoq.provider_consumers,
        stoq.max_recursion,
        stoq.max_required_worker_depth,
    ) == (
        100,
        2,
        10,
        10,
    )
    assert stoq.plugin_dir_list == [str(tmp_path / "plugins")]
    (tmp_path / "stoq.cfg").write_text(
        "[core]\nmax_queue = 7\nprovider_consumers = 3\nmax_recursion = 4\n"
        "max_required_worker_depth = 2\nalways_dispatch = worker, worker2\ndispatchers = dispatcher\n"
    )
    stoq = make_stoq()
    assert (
        stoq.max_queue,
        stoq.provider_consumers,
        stoq.max_recursion,
        stoq.max_required_worker_depth,
    ) == (
        7,
        3,
        4,
        2,
    )
    assert stoq.always_dispatch == ["worker", "worker2"]
    assert "dispatcher" in stoq.plugins.loaded


def test_an_empty_list_argument_beats_the_config_file(make_stoq, tmp_path):
    (tmp_path / "stoq.cfg").write_text("[core]\nalways_dispatch = worker\n")
    assert make_stoq(always_dispatch=[]).always_dispatch == []


def test_config_file_is_read_from_base_dir_only_if_it_exists(make_stoq, tmp_path):
    make_stoq()  # no stoq.cfg: fine
    other = tmp_path / "elsewhere.cfg"
    other.write_text("[core]\nmax_queue = 3\n")
    assert make_stoq(config_file=str(other)).max_queue == 3


def test_a_malformed_stoq_cfg_is_a_clear_error(make_stoq, tmp_path):
    (tmp_path / "stoq.cfg").write_text("this is not ini\n")
    with pytest.raises(StoqException, match=r"stoq\.cfg is not a valid stoq\.cfg"):
        make_stoq()
    (tmp_path / "stoq.cfg").write_text("[core]\nmax_queue = many\n")
    with pytest.raises(StoqException, match="max_queue"):
        make_stoq()


def test_a_new_stoq_does_not_add_another_log_handler(make_stoq, tmp_path):
    """v3 bug: every Stoq() added handlers, so each line was logged once per instance."""
    logger = logging.getLogger("stoq")
    make_stoq(log_dir=str(tmp_path / "logs"))
    count = len(logger.handlers)
    make_stoq(log_dir=str(tmp_path / "logs"))
    make_stoq(log_dir=str(tmp_path / "logs"))
    assert len(logger.handlers) == count
    logger.warning("once")
    lines = (tmp_path / "logs" / "stoq.log").read_text().splitlines()
    assert sum("once" in line for line in lines) == 1


def test_every_hook_has_a_spec_with_a_docstring():
    from stoq_core import hookspecs

    for name in HOOK_NAMES:
        spec = getattr(hookspecs, name)
        assert spec.__doc__ and ":returns:" in spec.__doc__, name


def test_stoq_without_arguments_uses_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stoq = Stoq(log_dir=None)
    assert stoq.base_dir == str(tmp_path)


def test_stoq_cfg_is_read_with_v3_percent_escapes(make_stoq, tmp_path):
    (tmp_path / "stoq.cfg").write_text(
        "[reports_config]\nv3_style = %%Y/%%m\nbare = %Y/%m\nref = %(bare)s!\n"
    )
    config = (
        make_stoq(plugin_opts={"reports_config": {"given": "%%d"}})
        .load_plugin("reports_config")
        .config
    )
    assert config.get("options", "v3_style") == "%Y/%m"
    assert config.get("options", "bare") == "%Y/%m"  # v3 failed here; taken as written
    assert config.get("options", "given") == "%%d"  # options given at the call are literal


def test_a_v3_base_class_method_named_like_another_roles_hook_is_not_registered(
    make_stoq, install_plugins
):
    install_plugins({"fetching": "fakes:FetchingWorker"})
    stoq = make_stoq()
    assert stoq.plugins.load("fetching").hooks.keys() == {"scan"}
    assert make_stoq().list_plugins()["fetching"].hooks == ["scan"]


def test_a_hookimpl_may_take_fewer_arguments_than_the_hook(make_stoq, install_plugins):
    """pluggy lets an implementation name a subset of the hook's arguments; so does the engine."""
    install_plugins({"payload_only": "fakes:PayloadOnly"})
    stoq = make_stoq()
    _, results = scan(stoq, content=b"abc", start=["payload_only"])
    assert results[b"abc"].workers["payload_only"] == {"size": 3}
