"""Named like the standard library's tarfile: it must never replace it."""

FROM_THE_PLUGIN_FOLDER = True
