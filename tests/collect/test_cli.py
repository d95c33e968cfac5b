"""`aifactory crawl URL --max-pages N`, run the way a new user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from aifactory.db import Database
from aifactory.db.schema import pages
from tests.collect.sites import SiteServer, wide_site

SITE_FILES = ("/robots.txt", "/.well-known/tdmrep.json")


def aifactory(*args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIFACTORY_", "CRAWLER_", "DATABASE_URL"))
    }
    env.update(AUTO_TUNE="0", **settings)
    return subprocess.run(
        [sys.executable, "-m", "aifactory", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_crawl_command_fetches_the_pages_and_summarizes(tmp_path: Path) -> None:
    with SiteServer(wide_site(60)) as site:
        done = aifactory(
            "crawl", site.url("/"), "--max-pages", "30",
            cwd=tmp_path, CRAWLER_PRIVATE_ALLOWLIST="127.0.0.1", CRAWLER_DOMAIN_MIN_INTERVAL_SEC="0.01",
            CRAWLER_BATCH_SLEEP_SEC="0",
        )  # fmt: skip
        fetched = [path for path in site.paths() if path not in SITE_FILES]
    assert done.returncode == 0, done.stderr
    assert "crawled 30 pages" in done.stdout
    assert "stored 30" in done.stdout
    assert "30/30 pages" in done.stderr  # the progress line
    assert len(fetched) == 30 == len(set(fetched))
    db = Database(f"sqlite:///{tmp_path / 'data' / 'aifactory.db'}")  # the default database
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(pages)).scalar() == 30
    db.dispose()


def test_crawl_command_explains_refused_local_addresses(tmp_path: Path) -> None:
    with SiteServer(wide_site(3)) as site:
        done = aifactory("crawl", site.url("/"), "--max-pages", "5", cwd=tmp_path)
        assert site.hits == []
    assert done.returncode == 0, done.stderr
    assert "unsafe_address 1" in done.stdout
    assert "CRAWLER_PRIVATE_ALLOWLIST" in done.stdout


def test_crawl_command_rejects_what_is_not_a_web_url(tmp_path: Path) -> None:
    done = aifactory("crawl", "ftp://example.com/", cwd=tmp_path)
    assert done.returncode == 2
    assert "not an http(s) URL" in done.stderr
