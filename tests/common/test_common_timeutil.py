from __future__ import annotations

import re
import time

from common.timeutil import epoch_to_iso, iso_to_epoch, utc_now_iso


def test_now_is_utc_milliseconds_with_z() -> None:
    now = utc_now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now)
    assert abs(iso_to_epoch(now) - time.time()) < 5


def test_round_trip_and_spellings() -> None:
    assert epoch_to_iso(0) == "1970-01-01T00:00:00.000Z"
    assert epoch_to_iso(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert epoch_to_iso(None) is None
    assert iso_to_epoch("2023-11-14T22:13:20.250Z") == 1_700_000_000.25
    assert iso_to_epoch("2023-11-14T22:13:20.250+00:00") == 1_700_000_000.25
    assert iso_to_epoch("2023-11-14T22:13:20.250") == 1_700_000_000.25  # no offset: UTC


def test_unparseable_gives_the_default() -> None:
    assert iso_to_epoch("yesterday") is None
    assert iso_to_epoch("yesterday", default=7) == 7
    assert iso_to_epoch(None, default=3) == 3
