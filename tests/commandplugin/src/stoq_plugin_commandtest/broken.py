"""A command module whose import fails, as one with a missing dependency does."""

import stoq_no_such_dependency  # noqa: F401

command = None
