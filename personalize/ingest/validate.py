"""Vectorized per-column checks shared by events and catalog: turn a column of strings or typed values into
clean values plus masks of rows that are missing or unparseable, and pick each bad row's first reason."""

from __future__ import annotations

import numpy as np
import pandas as pd

from personalize.ids import ID_FORBIDDEN_RE2, ID_MAX_CHARS, id_problem, normal_id

# How spreadsheets and dataframes spell "no value" in a number or timestamp column.
NULL_TOKENS = ("nan", "nat", "null", "none", "na", "n/a", "<na>")


def text_column(
    values: pd.Series, max_chars: int | None = None, lower: bool = False
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Stripped strings (object dtype, ready for the database driver), a mask of rows that are empty, null or
    NaN, and a mask of rows longer than ``max_chars``."""
    text, missing, too_long = _stripped_text(values, max_chars, lower)
    return _as_objects(text, missing), missing, too_long


def id_column(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`text_column` for listener and track ids (kept in NFC), plus a mask of ids that are present
    and short enough but break :data:`personalize.ids.ID_RULE`. ASCII ids are checked in Arrow; the few
    others one by one with :func:`personalize.ids.id_problem`, the rule the API applies."""
    text, missing, too_long = _stripped_text(values, ID_MAX_CHARS, lower=False)
    present = ~missing & ~too_long
    if values.dtype.kind in "iuf":
        return _as_objects(text, missing), missing, too_long, np.zeros(len(values), dtype=bool)
    ascii_ = text.str.isascii().to_numpy(dtype=bool, na_value=True)
    bad_chars = text.str.contains(ID_FORBIDDEN_RE2, regex=True).to_numpy(dtype=bool, na_value=False).copy()
    bad_chars |= text.isin([".", ".."]).to_numpy(dtype=bool)
    others = np.flatnonzero(~ascii_ & present)
    if len(others):
        text = text.astype(object)
        for i in others:
            value = normal_id(text.iat[i])
            text.iat[i] = value
            bad_chars[i] = id_problem(value) is not None
    return _as_objects(text, missing), missing, too_long, bad_chars & present


def _stripped_text(
    values: pd.Series, max_chars: int | None, lower: bool
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    missing = values.isna().to_numpy(dtype=bool).copy()  # pandas may hand out a read-only view
    if values.dtype.kind in "iu":
        text = values.astype("str")
    elif values.dtype.kind == "f":
        # Identifiers stored as floats (a column with gaps) lose nothing when whole numbers.
        filled = values.where(~missing, 0)
        as_int = filled.round().astype(np.int64)
        text = as_int.astype("str").where((filled == as_int).to_numpy(), filled.astype("str"))
    else:
        # Arrow-backed strings: strip, lower and measure in C++ before handing Python objects on. (Filling
        # gaps rebuilds the whole array from Python objects: only when there are gaps.)
        text = (values.where(~missing, "") if missing.any() else values).astype("str").str.strip()
        if lower:
            text = text.str.lower()
    missing |= (text == "").to_numpy(dtype=bool)
    too_long = np.zeros(len(values), dtype=bool)
    if max_chars is not None:
        too_long = (text.str.len() > max_chars).to_numpy(dtype=bool)
    return text, missing, too_long


def _as_objects(text: pd.Series, missing: np.ndarray) -> pd.Series:
    text = text.astype(object)
    return text.where(~missing, "") if missing.any() else text


# C0 control characters and DEL. NUL cannot be stored in a PostgreSQL text column at all, and none of them
# belongs in an id or a timestamp: a row holding one is quarantined, never stored.
CONTROL_CHARS = r"[\x00-\x1f\x7f]"


def control_characters(values: pd.Series) -> np.ndarray:
    """A mask of the text values holding a control character inside them (surrounding whitespace such as a
    trailing newline is stripped before any check, so it does not count)."""
    if values.dtype.kind in "iufbM" or isinstance(values.dtype, pd.DatetimeTZDtype):
        return np.zeros(len(values), dtype=bool)
    text = values.astype("str").str.strip()
    return text.str.contains(CONTROL_CHARS, regex=True).to_numpy(
        dtype=bool, na_value=False
    ) & ~values.isna().to_numpy(dtype=bool)


def first_control_character(value: object) -> str:
    """Where the first control character of ``value`` is, in words: ``U+0000 at character 4``."""
    text = str(value).strip()
    for i, ch in enumerate(text, start=1):
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"U+{ord(ch):04X} at character {i}"
    return "none"


def hash_ids(values: np.ndarray) -> np.ndarray:
    """64-bit hashes of short strings, vectorized: ids go through numpy as fixed-width bytes (their UTF-8
    encoding), about 40x faster than hashing Python objects.

    The width is the batch's longest id, rounded up to 8 bytes; an id's zero padding leaves its hash alone,
    so the same id hashes the same in every batch whatever the width.
    """
    try:
        fixed = values.astype("S")
    except (UnicodeEncodeError, ValueError, TypeError):
        # Non-ASCII ids somewhere in the batch: their UTF-8 bytes, hashed the same way (a rarer, slower path)
        fixed = np.array([str(v).encode("utf-8", "surrogateescape") for v in values], dtype="S")
    n_lanes = max(1, -(-fixed.dtype.itemsize // 8))
    if fixed.dtype.itemsize != 8 * n_lanes:
        fixed = fixed.astype(f"S{8 * n_lanes}")
    lanes = fixed.view(np.uint64).reshape(len(fixed), n_lanes)
    h = np.full(len(fixed), 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n_lanes):
            lane = lanes[:, k]
            h = np.where(lane != 0, _mix64(h ^ lane), h) if k else _mix64(h ^ lane)
    return h


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit flips about half the output bits."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def number_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float values, a missing mask and an unparseable mask (text that is not a number)."""
    if values.dtype.kind in "iufb":
        numbers = values.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(numbers)
        return numbers, missing, np.zeros(len(values), dtype=bool)
    text, missing, _ = text_column(values)
    missing |= text.str.lower().isin(NULL_TOKENS).to_numpy(dtype=bool)
    numbers = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(
        dtype=float, na_value=np.nan
    )
    bad = np.isnan(numbers) & ~missing
    return numbers, missing, bad


def timestamp_column(
    values: pd.Series, ts_format: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTC microseconds since the epoch (int64), a missing mask and an unparseable mask.

    Strings are ISO 8601, or follow the strftime ``ts_format`` when given (``%m/%d/%Y %H:%M``); those
    without an offset are taken as UTC, those with one are converted to UTC.
    """
    n = len(values)
    if isinstance(values.dtype, pd.DatetimeTZDtype) or values.dtype.kind == "M":
        stamps = values if isinstance(values.dtype, pd.DatetimeTZDtype) else values.dt.tz_localize("UTC")
        stamps = stamps.dt.tz_convert("UTC")
        missing = stamps.isna().to_numpy(dtype=bool)
        bad = np.zeros(n, dtype=bool)
    else:
        text, missing, _ = text_column(values)
        missing |= text.str.lower().isin(NULL_TOKENS).to_numpy(dtype=bool)
        if values.dtype.kind in "iuf":
            # Bare numbers are not ISO 8601 (seconds or milliseconds? the file cannot say).
            return np.zeros(n, dtype=np.int64), missing, ~missing
        stamps = pd.to_datetime(
            text.where(~missing, None), utc=True, format=ts_format or "ISO8601", errors="coerce"
        )
        bad = stamps.isna().to_numpy(dtype=bool) & ~missing
    naive = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    micros = naive.astype(np.int64)
    micros[missing | bad] = 0
    return micros, missing, bad


def first_reason(checks: list[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    """Per row, the code of the first check (in priority order) that flags it, else None."""
    reason = np.full(n, None, dtype=object)
    open_rows = np.ones(n, dtype=bool)
    for code, mask in checks:
        hit = mask & open_rows
        if hit.any():
            reason[hit] = code
            open_rows &= ~hit
    return reason
