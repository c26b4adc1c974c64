"""Progress of a long job as log lines a user can `tail -f`: items done of the total, rate and time left.

tqdm's meter formats the line (``tqdm.format_meter``); it is written as a whole line at most every ``interval``
seconds (and at the end) rather than redrawn with carriage returns, which a log file on a cluster shows as one
ever-growing line.
"""

from __future__ import annotations

import time
from typing import Callable

INTERVAL_S = 30.0  # a line every 30 s: a day-long job logs ~3,000 lines


class Progress:
    def __init__(self, total: int, desc: str, log: Callable[[str], None] = print, interval: float = INTERVAL_S,
                 unit: str = "items"):  # fmt: skip
        self.total, self.desc, self.log, self.interval, self.unit = total, desc, log, interval, unit
        self.done, self.start = 0, time.monotonic()
        self.last = self.start

    def update(self, n: int = 1) -> None:
        from tqdm import tqdm

        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            self.log(tqdm.format_meter(self.done, self.total, now - self.start, prefix=self.desc, unit=f" {self.unit}",
                                       ascii=True, ncols=100))  # fmt: skip
