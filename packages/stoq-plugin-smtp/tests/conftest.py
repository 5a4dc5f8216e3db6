"""stoQ's fixtures for plugin tests (``stoq_with``), as any plugin's tests would use them."""

pytest_plugins = ["stoq_core.testing"]
