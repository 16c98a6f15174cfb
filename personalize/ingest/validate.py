"""Vectorized per-column checks shared by events and catalog: turn a column of strings or typed values into
clean values plus masks of rows that are missing or unparseable, and pick each bad row's first reason."""

from __future__ import annotations

import numpy as np
import pandas as pd


def text_column(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Stripped strings and a mask of rows that are empty, null or NaN."""
    missing = values.isna().to_numpy(dtype=bool).copy()  # pandas may hand out a read-only view
    if values.dtype.kind in "iu":
        return values.astype(str), missing
    if values.dtype.kind == "f":
        # Identifiers stored as floats (a column with gaps) lose nothing when whole numbers.
        filled = values.where(~missing, 0)
        as_int = filled.round().astype(np.int64)
        out = as_int.astype(str).where((filled == as_int).to_numpy(), filled.astype(str))
        return out.astype(object).where(~missing, ""), missing
    text = values.where(~missing, "").astype(str).str.strip().astype(object)
    missing |= (text == "").to_numpy(dtype=bool)
    return text, missing


def number_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float values, a missing mask and an unparseable mask (text that is not a number)."""
    if values.dtype.kind in "iufb":
        numbers = values.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(numbers)
        return numbers, missing, np.zeros(len(values), dtype=bool)
    text, missing = text_column(values)
    numbers = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(
        dtype=float, na_value=np.nan
    )
    bad = np.isnan(numbers) & ~missing
    return numbers, missing, bad


def timestamp_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTC microseconds since the epoch (int64), a missing mask and an unparseable mask.

    Strings are ISO 8601; those without an offset are taken as UTC, those with one are converted to UTC.
    """
    n = len(values)
    if isinstance(values.dtype, pd.DatetimeTZDtype) or values.dtype.kind == "M":
        stamps = values if isinstance(values.dtype, pd.DatetimeTZDtype) else values.dt.tz_localize("UTC")
        stamps = stamps.dt.tz_convert("UTC")
        missing = stamps.isna().to_numpy(dtype=bool)
        bad = np.zeros(n, dtype=bool)
    else:
        text, missing = text_column(values)
        if values.dtype.kind in "iuf":
            # Bare numbers are not ISO 8601 (seconds or milliseconds? the file cannot say).
            return np.zeros(n, dtype=np.int64), missing, ~missing
        stamps = pd.to_datetime(text.where(~missing, None), utc=True, format="ISO8601", errors="coerce")
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
