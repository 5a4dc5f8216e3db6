"""A plugin module that raises KeyboardInterrupt when imported (no user pressed Ctrl-C)."""

raise KeyboardInterrupt
