"""stoq-plugin-yara: YARA matching for stoQ, as a worker and as a dispatcher."""

from stoq_plugin_yara.plugin import YaraPlugin

__version__ = "1.0.0"

__all__ = ["YaraPlugin", "__version__"]
