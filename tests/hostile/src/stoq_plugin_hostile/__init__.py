"""Plugins that misbehave on purpose; see ``plugin.py`` for the modes."""
