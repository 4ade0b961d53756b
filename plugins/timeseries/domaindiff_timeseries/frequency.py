"""The data's frequency and what follows from it: seasonality, lags, default lengths.

A frequency is a pandas offset alias (``"h"``, ``"D"``, ``"W-SAT"``, ``"MS"``, ``"QS-OCT"``,
``"YS"``, ``"30min"`` ...). It comes from the data (a CSV's or DataFrame's timestamps, a GluonTS
dataset's ``pd.Period`` starts) or from one option (``TimeSeriesData(freq=...)``), never from a
default. What follows from it, the way GluonTS does it:

- :func:`seasonality`: GluonTS's ``get_seasonality`` (hourly 24, business-daily 5, monthly 12,
  quarterly 4, yearly 1, minutes 1440 / multiple ...), except daily 7 and weekly 52, the weekly
  and yearly cycles the Monash forecasting archive uses for MASE (GluonTS says 1 for both, which
  makes seasonal naive the naive forecast: on the weekly Mauna Loa CO2 series that forecast
  ignores the yearly cycle).
- :func:`default_lags`: GluonTS's ``get_lags_for_frequency`` up to the context length, without
  lag 1 (the S4 layers already read a step's neighbours), with the season (GluonTS's daily lags
  skip 7).
- :func:`default_lengths`: the forecast horizon of the M4 competition for the frequency (yearly
  6, quarterly 8, monthly 18, weekly 13, daily 14; business-daily 10, two weeks), a day for
  sub-daily data (24 hourly, as TSDiff), and a context of ``max(4 x horizon, 2 seasons)``
  (hourly: 336, TSDiff's).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

__all__ = ["check_freq", "check_steps", "default_lags", "default_lengths", "family", "infer_freq",
           "period_alias", "same_freq", "seasonality"]

#: M4 competition horizons by frequency family
HORIZONS = {"Y": 6, "Q": 8, "M": 18, "W": 13, "D": 14, "B": 10}
#: seasonality where this plugin departs from GluonTS's get_seasonality (Monash archive)
SEASON_OVERRIDES = {"D": 7, "W": 52}


def _offset(freq: str):
    from pandas.tseries.frequencies import to_offset

    with warnings.catch_warnings():  # deprecated aliases ("H", "M", "Q", "A") still name offsets
        warnings.simplefilter("ignore")
        return to_offset(freq)


def check_freq(freq, field: str = "freq") -> str:
    """A pandas frequency alias in its canonical spelling (``"H"`` -> ``"h"``, ``"M"`` -> ``"ME"``).

    Raises:
        ValueError: naming ``field`` if pandas does not know the alias.
    """
    if isinstance(freq, bool) or not isinstance(freq, str) or not freq.strip():
        raise ValueError(f"{field}: expected a pandas frequency alias such as 'h', 'D', 'W', "
                         f"'MS', 'QS' or 'YS', got {freq!r}")
    try:
        off = _offset(freq.strip())
    except (ValueError, TypeError) as err:
        raise ValueError(f"{field}: unknown frequency {freq!r} (use a pandas offset alias such "
                         "as 'h', 'D', 'W', 'MS', 'QS', 'YS' or 'B')") from err
    return str(off.freqstr)


def same_freq(a: str, b: str) -> bool:
    """Whether two aliases name the same steps (``"H"`` and ``"h"``, ``"W"`` and ``"W-SUN"``).

    Quarters anchored three months apart are the same steps (``pd.infer_freq`` calls quarters
    starting in January ``"QS-OCT"``).
    """
    x, y = _offset(a), _offset(b)
    if x == y:
        return True
    month = "startingMonth"
    return (type(x) is type(y) and x.n == y.n and hasattr(x, month)
            and getattr(x, month) % 3 == getattr(y, month) % 3)


_FAMILIES = {"YearBegin": "Y", "YearEnd": "Y", "BYearBegin": "Y", "BYearEnd": "Y",
             "QuarterBegin": "Q", "QuarterEnd": "Q", "BQuarterBegin": "Q", "BQuarterEnd": "Q",
             "MonthBegin": "M", "MonthEnd": "M", "BusinessMonthBegin": "M",
             "BusinessMonthEnd": "M", "SemiMonthBegin": "M", "SemiMonthEnd": "M",
             "Week": "W", "Day": "D", "BusinessDay": "B", "CustomBusinessDay": "B",
             "Hour": "h", "BusinessHour": "h", "Minute": "min", "Second": "s", "Milli": "s",
             "Micro": "s", "Nano": "s"}


def family(freq: str) -> str:
    """The frequency's kind: ``Y``, ``Q``, ``M``, ``W``, ``D``, ``B``, ``h``, ``min`` or ``s``."""
    name = type(_offset(freq)).__name__
    if name not in _FAMILIES:
        raise ValueError(f"freq: {freq!r} ({name}) is not a frequency this plugin supports")
    return _FAMILIES[name]


def seasonality(freq: str) -> int:
    """Seasonal period (steps) of a frequency: GluonTS's, daily 7 and weekly 52 (see module)."""
    fam = family(freq)
    n = int(getattr(_offset(freq), "n", 1) or 1)
    if fam in SEASON_OVERRIDES:
        return max(1, SEASON_OVERRIDES[fam] // n)
    from gluonts.time_feature import get_seasonality

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(get_seasonality(check_freq(freq)))


def default_lengths(freq: str) -> tuple[int, int]:
    """``(context_length, prediction_length)`` for a frequency (see module)."""
    fam, season = family(freq), seasonality(freq)
    if fam in ("h", "min", "s"):
        if freq == "h" or check_freq(freq) == "h":
            return 336, 24
        horizon = max(1, season)
        return 14 * horizon, horizon
    horizon = HORIZONS[fam]
    return max(4 * horizon, 2 * season), horizon


def default_lags(freq: str, context_length: int) -> list[int]:
    """GluonTS's lags of the frequency up to ``context_length``, without lag 1, with the season."""
    from gluonts.time_feature import get_lags_for_frequency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lags = get_lags_for_frequency(check_freq(freq), lag_ub=int(context_length),
                                      num_default_lags=1)
    lags = [*lags, seasonality(freq)]
    return sorted({int(x) for x in lags if 1 < int(x) <= int(context_length)})


def period_alias(freq: str) -> str:
    """The ``pd.Period`` spelling of a frequency (``"MS"``/``"ME"`` -> ``"M"``, ``"QS"`` -> ``"Q"``)."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pd.Period("2000-01-01", freq=freq).freqstr
        except (ValueError, TypeError):
            pass
    fam = family(freq)
    n = int(getattr(_offset(freq), "n", 1) or 1)
    return f"{n if n > 1 else ''}{fam}"


def infer_freq(index, where: str) -> str | None:
    """The frequency of a time index (``DatetimeIndex``/``PeriodIndex``), or None for other indexes.

    Raises:
        ValueError: naming ``where`` for duplicated, unsorted or unevenly spaced timestamps.
    """
    import pandas as pd

    def at(i: int) -> str:
        return where

    if isinstance(index, pd.PeriodIndex):
        check_steps(index.to_timestamp(), at, labels=index, spacing=False)
        if len(index) > 1 and not (np.diff(index.asi8) == 1).all():
            i = int(np.flatnonzero(np.diff(index.asi8) != 1)[0]) + 1
            raise ValueError(f"{where}: periods are not consecutive ({index[i - 1]} -> "
                             f"{index[i]}); one row per period, missing values as NaN")
        return check_freq(index.freqstr)
    if not isinstance(index, pd.DatetimeIndex):
        return None
    if len(index) < 3:
        check_steps(index, at, spacing=False)
        raise ValueError(f"{where}: {len(index)} timestamps are too few to tell the frequency; "
                         "pass freq=...")
    return check_steps(index, at)


def check_steps(stamps, where: Callable[[int], str], labels=None,
                spacing: bool = True) -> str | None:
    """Refuse duplicated, unsorted and unevenly spaced time steps; the frequency of timestamps.

    The one check of every time index the plugin reads (CSV files, DataFrames, Series, GluonTS
    periods).

    Args:
        stamps: the rows' times: a ``DatetimeIndex``, or numbers (step numbers: order only).
        where: ``where(i)`` is the location of row ``i`` in a message (``"wide.csv:12"``,
            ``"DataFrame(...): item 'a': 'timestamp'"``).
        labels: the rows' times as the user wrote them, shown in messages (default ``stamps``).
        spacing: also refuse uneven spacing (timestamps only).

    Returns:
        The frequency (:func:`check_freq` of ``pd.infer_freq``) of at least three evenly spaced
        timestamps; None for step numbers, fewer than three timestamps or ``spacing=False``.

    Raises:
        ValueError: ``where(i): duplicated timestamp ...``, ``... timestamps are not increasing:
            <row i> comes after <row i-1> ...`` or ``... timestamps are not evenly spaced ...``.
    """
    import pandas as pd

    shown = stamps if labels is None else labels
    vals = pd.Series(stamps)
    dup = np.flatnonzero(vals.duplicated().to_numpy())
    if dup.size:
        i = int(dup[0])
        raise ValueError(f"{where(i)}: duplicated timestamp {shown[i]} (one row per time step)")
    raw = vals.to_numpy()
    back = np.flatnonzero(raw[1:] < raw[:-1]) + 1
    if back.size:
        i = int(back[0])
        raise ValueError(f"{where(i)}: timestamps are not increasing: {shown[i]} comes after "
                         f"{shown[i - 1]} (sort the rows by time)")
    if not spacing or not isinstance(stamps, pd.DatetimeIndex) or len(stamps) < 3:
        return None
    found = pd.infer_freq(stamps)
    if found is None:
        step = vals.diff().iloc[1:]
        common = step.mode().iloc[0]
        i = int(np.flatnonzero((step != common).to_numpy())[0]) + 1
        raise ValueError(f"{where(i)}: timestamps are not evenly spaced ({shown[i - 1]} -> "
                         f"{shown[i]}; most steps are {common}); one row per time step, missing "
                         "values as NaN")
    return check_freq(found)
