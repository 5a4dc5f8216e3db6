"""v3's ``stoq.core``: the ``Stoq`` engine class."""

from stoq_core.engine import Stoq

__all__ = ["Stoq"]
