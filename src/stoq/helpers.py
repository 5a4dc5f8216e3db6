"""v3's ``stoq.helpers``: the plugin config parser, results-safe JSON, digests, dict merging."""

from stoq_core.config import StoqConfigParser
from stoq_core.helpers import dumps, get_md5, get_sha1, get_sha256, get_sha512, merge_dicts

__all__ = [
    "StoqConfigParser",
    "dumps",
    "get_md5",
    "get_sha1",
    "get_sha256",
    "get_sha512",
    "merge_dicts",
]
