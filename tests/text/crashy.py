"""A text pool worker that misbehaves on purpose: installed as the pool's initializer in tests.

A page whose body contains CRASH kills its worker process (as a segfault in a parser or the OOM killer
would); one containing HANG blocks forever where no time limit reaches (the alarm is ignored)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from aifactory.text import pipeline


def install() -> None:
    real = pipeline.extract_document

    def misbehaving(body: str, *args: Any, **kwargs: Any) -> Any:
        if "CRASH" in body:
            os._exit(70)
        if "HANG" in body:
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            time.sleep(3600)
        return real(body, *args, **kwargs)

    pipeline.extract_document = misbehaving
