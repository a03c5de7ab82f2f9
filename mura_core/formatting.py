"""How numbers are shown to people, in the terminal and in the report alike."""
from __future__ import annotations

import math

MISSING = "–"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fixed(value: float, digits: int) -> str:
    """``value`` to ``digits`` decimals, with no minus sign on a value that rounds to zero
    ('-0.000' says nothing a reader can use)."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def percent(value, missing: str = MISSING, digits: int = 1) -> str:
    """0.6712 -> '67.1 %'; None or NaN -> ``missing``."""
    return missing if _missing(value) else f"{fixed(100 * value, digits)} %"


def duration(seconds, missing: str = MISSING) -> str:
    """Seconds as '42 s' below two minutes, else '3.5 min'; None -> ``missing``."""
    if _missing(seconds):
        return missing
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def number(value, digits: int = 3, missing: str = MISSING) -> str:
    """A table cell: ints with thousands separators, floats to ``digits`` decimals (tiny ones
    in scientific notation), bools as yes/no, None/NaN as ``missing``, anything else str."""
    if _missing(value):
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.{digits - 1}e}"
        return f"{value:,.{digits}f}"
    return str(value)


def format_metric(value, kind: str, missing: str = "n/a") -> str:
    """A metric as text by kind: "int" 1,234; "pct" 64.5 %; "float" 0.123."""
    if _missing(value):
        return missing
    if kind == "int":
        return f"{int(value):,}"
    if kind == "pct":
        return percent(value)
    return f"{value:.3f}"


def interval(value, low, high, kind: str = "pct", missing: str = MISSING) -> str:
    """A value with its 95 % interval: '83.2 % (79.9 to 86.4)', kappa '0.712 (0.640 to 0.781)';
    the value alone when there is no interval."""
    if _missing(value):
        return missing
    if kind == "pct":
        main, fmt = percent(value), (lambda v: fixed(100 * v, 1))
    else:
        main, fmt = fixed(value, 3), (lambda v: fixed(v, 3))
    if _missing(low) or _missing(high):
        return main
    return f"{main} ({fmt(low)} to {fmt(high)})"


def points(difference, signed: bool = True) -> str:
    """A difference of two proportions in percentage points: '+2.4 points'."""
    if _missing(difference):
        return MISSING
    return f"{100 * difference:+.1f} points" if signed else f"{100 * abs(difference):.1f} points"


def p_value(p) -> str:
    """McNemar's p as people read it: 'p = 0.031', 'p < 0.001'."""
    if _missing(p):
        return MISSING
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def data_size(nbytes) -> str:
    """Bytes as people read them: '812 kB', '42.0 GB' (powers of 1,000, as df -H shows)."""
    value = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(value) < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit in ("B", "kB") else f"{value:.1f} {unit}"
        value /= 1000
