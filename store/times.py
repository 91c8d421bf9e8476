"""The span of time a query may name: what the store's columns can hold, with room for the padding queries add.

DateTime64 starts at 1900-01-01; a nanosecond DateTime64(9) (event times) ends at 2262-04-11T23:47:16.854775807Z,
and queries pad their bounds by minutes to days, in Python and in SQL: the latest time leaves ten days to that end.
"""

from __future__ import annotations

import datetime as dt

EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2262, 4, 1, tzinfo=dt.UTC)
