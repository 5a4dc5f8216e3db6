"""A plugin module whose import fails, as one with a missing dependency does.

Its import is observable: with ``STOQ_TEST_IMPORT_MARKER`` set, it first creates that file, so a
test can prove a command did not import a plugin it did not name.
"""

import os

_marker = os.environ.get("STOQ_TEST_IMPORT_MARKER")
if _marker:
    with open(_marker, "a") as _handle:
        _handle.write("imported\n")

import a_dependency_that_is_not_installed  # type: ignore[import-not-found]  # noqa: E402, F401
