"""The shapes of stoq-plugins-public's v3 plugins, loaded from a plugin directory.

Each test writes a small plugin of its own with the shape of a public one (not its code): laid
out as v3's ``stoq install`` (``pip install -t``) left it, finding its data files from its own
frame, or playing provider, archiver and connector at once with ``stoq.helpers``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from stoq import Payload, RequestMeta, Stoq, WorkerResponse

# yara's shape: .stoq Name "lookup", Module and folder "lookupscan", beside an __init__.py, and
# a data file found from the module's own frame (as yara, iocextract, jinja and trid find theirs).
LOOKUP = """
from inspect import currentframe, getframeinfo
from pathlib import Path

from stoq import Payload, Request, WorkerResponse
from stoq.plugins import WorkerPlugin


class LookupPlugin(WorkerPlugin):
    def __init__(self, config):
        super().__init__(config)
        parent = Path(getframeinfo(currentframe()).filename).resolve().parent
        words = config.get("options", "words", fallback="data/words.txt")
        self.words = (parent / words).read_text().split()

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        text = payload.content.decode()
        return WorkerResponse({"found": [word for word in self.words if word in text]})
"""

# filedir's shape: one class that is provider, archiver and connector, writing with the
# ``stoq.helpers`` module rather than names imported from it.
FOLDER = """
import os
from asyncio import Queue
from pathlib import Path

from stoq import helpers
from stoq import ArchiverResponse, Payload, PayloadMeta, Request, StoqResponse
from stoq.plugins import ArchiverPlugin, ConnectorPlugin, ProviderPlugin


class FolderPlugin(ProviderPlugin, ConnectorPlugin, ArchiverPlugin):
    def __init__(self, config):
        super().__init__(config)
        self.source_dir = config.get("options", "source_dir")
        self.results_dir = config.get("options", "results_dir")
        self.compactly = config.getboolean("options", "compactly", fallback=True)

    async def ingest(self, queue: Queue) -> None:
        for path in sorted(Path(self.source_dir).glob("*")):
            meta = PayloadMeta(extra_data={"filename": path.name})
            await queue.put(Payload(path.read_bytes(), meta))

    async def archive(self, payload: Payload, request: Request) -> ArchiverResponse:
        return ArchiverResponse({"path": os.path.join("archive", helpers.get_sha1(payload.content))})

    async def save(self, response: StoqResponse) -> None:
        with open(os.path.join(self.results_dir, response.scan_id), "x") as out:
            out.write(helpers.dumps(response, compactly=self.compactly) + "\\n")
"""


def _install_like_v3(plugins: Path, folder: str, name: str, code: str) -> Path:
    """Lay out a plugin as ``pip install -t plugins`` did: a package named after its folder."""
    plugin = plugins / folder
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("")
    (plugin / f"{folder}.py").write_text(code)
    (plugin / f"{folder}.stoq").write_text(
        f"[Core]\nName = {name}\nModule = {folder}\n\n"
        "[Documentation]\nVersion = 3.0.0\nDescription = a public plugin's shape\n\n[options]\n"
    )
    return plugin


def test_a_plugin_named_apart_from_its_folder_reads_data_found_from_its_own_frame(
    tmp_path: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugins = tmp_path / "plugins"
    plugin = _install_like_v3(plugins, "lookupscan", "lookup", LOOKUP)
    (plugin / "data").mkdir()
    (plugin / "data" / "words.txt").write_text("evil\nbenign\n")
    stoq = make_stoq(plugin_dir_list=[str(plugins)])

    worker = stoq.load_plugin("lookup")
    response = asyncio.run(worker.scan(Payload(b"an evil payload"), RequestMeta()))

    assert isinstance(response, WorkerResponse)
    assert response.results == {"found": ["evil"]}
    assert worker.plugin_name == "lookup" and worker.__version__ == "3.0.0"


def test_a_provider_archiver_and_connector_in_one_class_runs_as_in_v3(
    tmp_path: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugins, source, results = tmp_path / "plugins", tmp_path / "in", tmp_path / "out"
    _install_like_v3(plugins, "folder", "folder", FOLDER)
    _install_like_v3(plugins, "lookupscan", "lookup", LOOKUP)
    (plugins / "lookupscan" / "data").mkdir()
    (plugins / "lookupscan" / "data" / "words.txt").write_text("evil\n")
    source.mkdir()
    results.mkdir()
    (source / "a.txt").write_bytes(b"evil")
    options = {"source_dir": str(source), "results_dir": str(results), "compactly": "false"}
    stoq = make_stoq(
        plugin_dir_list=[str(plugins)],
        plugin_opts={"folder": options},
        providers=["folder"],
        dest_archivers=["folder"],
        connectors=["folder"],
        always_dispatch=["lookup"],
    )

    asyncio.run(stoq.run())

    [saved] = list(results.iterdir())
    text = saved.read_text()
    assert "\n    " in text  # compactly = false: indented, as helpers.dumps wrote it in v3
    [result] = json.loads(text)["results"]
    assert result["payload_meta"]["extra_data"] == {"filename": "a.txt"}
    assert result["workers"] == {"lookup": {"found": ["evil"]}}
    assert result["archivers"]["folder"]["path"].startswith("archive/")
