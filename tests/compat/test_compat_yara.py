"""v3 plugins see yara-python 4.2's match API, whatever yara-python is installed (issue 13)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from stoq import Payload, Request, Stoq
from stoq_core.testing import scan_sync

yara = pytest.importorskip("yara")

STOQ_FILE = "[Core]\nName = oldyara\nModule = oldyara\n[Documentation]\nVersion = 3.0.3\n"

# Written the way stoq-plugins-public's yara plugin reads matches: slicing and unpacking the
# (offset, identifier, data) tuples of match.strings.
MODULE = """
import yara
from stoq import DispatcherResponse, WorkerResponse
from stoq.plugins import DispatcherPlugin, WorkerPlugin

RULES = 'rule greeting { meta: plugin = "x" strings: $h = "hello" $w = "world" condition: all of them }'


class OldYara(WorkerPlugin, DispatcherPlugin):
    def __init__(self, config):
        super().__init__(config)
        self.rules = yara.compile(source=RULES)

    async def scan(self, payload, request):
        matches = self.rules.match(data=payload.content)
        return WorkerResponse({"strings": [m.strings[:2] for m in matches]})

    async def get_dispatches(self, payload, request):
        offsets = [o for m in self.rules.match(data=payload.content) for o, _, _ in m.strings]
        return DispatcherResponse(meta={"offsets": offsets})
"""


@pytest.fixture
def v3_yara(tmp_path: Path, make_stoq: Callable[..., Stoq]) -> Stoq:
    folder = tmp_path / "plugins" / "oldyara"
    folder.mkdir(parents=True)
    (folder / "oldyara.stoq").write_text(STOQ_FILE)
    (folder / "oldyara.py").write_text(MODULE)
    for path in [folder.parent, folder, *folder.iterdir()]:
        path.chmod(path.stat().st_mode & ~0o022)
    return make_stoq(plugin_dir_list=[str(folder.parent)])


def test_a_v3_plugin_reads_match_strings_as_offset_identifier_data_tuples(v3_yara: Stoq) -> None:
    response = json.loads(str(scan_sync(v3_yara, b"hello world, hello", start=["oldyara"])))

    assert response["errors"] == []
    assert response["results"][0]["workers"]["oldyara"] == {
        "strings": [[[0, "$h", "hello"], [13, "$h", "hello"]]]
    }


def test_a_v3_dispatcher_can_unpack_the_match_strings(v3_yara: Stoq) -> None:
    plugin = v3_yara.load_plugin("oldyara")
    response = asyncio.run(plugin.get_dispatches(Payload(b"hello world"), Request()))

    assert response.meta == {"offsets": [0, 6]}


def test_yara_itself_is_left_as_installed(v3_yara: Stoq) -> None:
    v3_yara.load_plugin("oldyara")

    match = yara.compile(source='rule a { strings: $a = "a" condition: $a }').match(data=b"a")[0]

    # Plugins installed as distributions (stoq-plugin-yara) get yara-python's own API.
    assert isinstance(match.strings[0], tuple) == (not hasattr(yara, "StringMatch"))
