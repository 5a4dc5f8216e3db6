"""A quick local plugin: a plain ``@hookimpl`` class in a plugin directory, through the installed
``stoq`` (issue 15, item 10). The plugin directory's rules (trust included) are v3's."""

from __future__ import annotations

from pathlib import Path

from cli_plain_plugin import NUL_COUNTER, write_plain_plugin
from cli_support import StoqRunner


def _sample(tmp_path: Path) -> Path:
    sample = tmp_path / "nuls.bin"
    sample.write_bytes(b"ab\0\0c\0")
    return sample


def test_a_plain_class_in_a_plugin_dir_scans(stoq: StoqRunner, tmp_path: Path) -> None:
    write_plain_plugin(tmp_path / "local")

    done = stoq(
        "scan", str(_sample(tmp_path)), "-a", "nuls", "--plugin-dir", str(tmp_path / "local")
    )

    assert done.code == 0, done.err
    [result] = done.json()["results"]
    # plugin_name is set inside __init__, and the .stoq file's [options] reach the plugin.
    assert result["workers"]["nuls"] == {"nul_bytes": 3, "by": "nuls v2"}
    assert done.json()["errors"] == []


def test_a_plain_class_in_stoq_home_plugins_scans(stoq: StoqRunner, tmp_path: Path) -> None:
    write_plain_plugin(stoq.home / "plugins")

    done = stoq("scan", str(_sample(tmp_path)), "-a", "nuls")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["nuls"]["nul_bytes"] == 3


def test_a_plain_class_in_a_plugin_dir_passes_plugin_check(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    directory = write_plain_plugin(tmp_path / "local")

    done = stoq("plugin", "check", "nuls", "--plugin-dir", str(tmp_path / "local"))

    assert done.code == 0, done.err
    assert done.out == (
        f"nuls: ok (version 0.1; plugin directory {directory.parent}; hooks scan)\n"
    )


def test_a_plain_class_others_could_have_written_is_refused_unrun(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "imported"
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n{NUL_COUNTER}"
    directory = write_plain_plugin(tmp_path / "local", code=code)
    directory.chmod(0o775)

    done = stoq(
        "scan", str(_sample(tmp_path)), "-a", "nuls", "--plugin-dir", str(tmp_path / "local")
    )

    assert done.code != 0
    [line] = done.err.splitlines()
    assert line.startswith("stoq: error: plugin 'nuls' (")
    assert "is writable by its group" in line and "STOQ_ALLOW_UNSAFE_PLUGIN_DIRS" in line
    assert not marker.exists()


def test_a_plain_class_beside_a_v3_plugin_class_is_two_plugin_classes(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    code = NUL_COUNTER + (
        "\n\nfrom stoq_core.plugins import WorkerPlugin\n\n\n"
        "class Other(WorkerPlugin):\n"
        "    async def scan(self, payload, request):\n"
        "        return None\n"
    )
    write_plain_plugin(tmp_path / "local", code=code)

    done = stoq("plugin", "check", "nuls", "--plugin-dir", str(tmp_path / "local"))

    assert done.code == 1
    assert "defines 2 plugin classes (NulCounter, Other)" in done.out
