"""Run by test_crash.py in a child process: a build that reports each append, so it can be killed mid-way.

python -m tests.dataset.crashing_build DATABASE_URL DATA_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from aifactory.dataset import builder
from aifactory.dataset.shards import ShardWriter
from aifactory.db.database import Database
from aifactory.settings import Settings
from tests.dataset.helpers import SMALL


def main() -> None:
    url, data_dir = sys.argv[1], Path(sys.argv[2])
    builder.CHUNK_DOCS = 4
    real_append = ShardWriter.append

    def slow_append(self: ShardWriter, tokens, records) -> None:  # type: ignore[no-untyped-def]
        real_append(self, tokens, records)
        self._shard.flush()  # the appended bytes reach the file, as a long build's would
        print("appended", flush=True)
        time.sleep(0.05)

    ShardWriter.append = slow_append  # type: ignore[method-assign]
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=url, auto_tune=False, **SMALL)
    builder.build(settings, Database(url))
    print("finished", flush=True)


if __name__ == "__main__":
    main()
