"""Quantities as people read them (one formatter for every table, plan and progress line)."""


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'; None (not known) -> 'unknown'."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
