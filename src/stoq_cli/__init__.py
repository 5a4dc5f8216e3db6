"""The ``stoq`` command line."""
