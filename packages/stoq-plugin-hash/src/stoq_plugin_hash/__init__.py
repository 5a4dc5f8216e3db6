"""stoQ's hash worker: the payload's digests, sha256, md5 and sha1 by default."""

from stoq_plugin_hash.plugin import DEFAULT_ALGORITHMS, PARALLEL_THRESHOLD, HashPlugin

__all__ = ["DEFAULT_ALGORITHMS", "PARALLEL_THRESHOLD", "HashPlugin"]
