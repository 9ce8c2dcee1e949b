"""The core's L2 cache size, read from Linux's sysfs: whether a chain of passes over cache-sized
blocks pays depends on it (`ops._util.flat_blocks`)."""

from __future__ import annotations

from pathlib import Path

SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def l2_bytes(root: Path = SYSFS) -> int:
    """Bytes of the first CPU's level-2 cache, or 0 where unknown (not Linux, no sysfs)."""
    try:
        for index in sorted(root.glob("index*")):
            if (index / "level").read_text().strip() == "2":
                return parse_size((index / "size").read_text())
    except (OSError, ValueError):
        return 0
    return 0


def parse_size(text: str) -> int:
    """sysfs's cache size ("2048K", "1M", "512") in bytes."""
    text = text.strip()
    unit = _UNITS.get(text[-1:].upper(), 1)
    return int(text[:-1] if unit > 1 else text) * unit
