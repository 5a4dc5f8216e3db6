"""A helper module beside the plugin module, imported by its bare name as v3 plugins did."""


def joined(names: list[str]) -> str:
    return ", ".join(sorted(names))
