"""stoq-plugin-filedir: ingest a directory, save results and archive payloads on local disk."""

from stoq_plugin_filedir.plugin import FileDirPlugin

__version__ = "1.0.0"

__all__ = ["FileDirPlugin", "__version__"]
