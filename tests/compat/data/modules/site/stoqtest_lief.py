"""Stands in for an installed library that a v3 plugin of the same name imports."""

FROM_THE_LIBRARY = True


def parse(raw: bytes) -> dict[str, object]:
    return {"size": len(raw), "magic": raw[:2].hex()}
