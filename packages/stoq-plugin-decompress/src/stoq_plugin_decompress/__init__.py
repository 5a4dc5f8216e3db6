"""stoQ's decompress worker: archive members become payloads, within hard limits."""

from stoq_plugin_decompress.limits import Limits
from stoq_plugin_decompress.plugin import DecompressPlugin

__all__ = ["DecompressPlugin", "Limits"]
