"""`aifactory explain URL`: why a page was kept or dropped, rule by rule.

It looks the URL up (stored documents, recorded rejections, pages waiting in staging), gets the page
(the staged copy, the local file, or one polite fetch: robots.txt is obeyed, the crawler's
network-safety policy and limits apply, and the second request waits the crawl delay), runs it
through the same extraction and quality rules as the text pipeline, and prints every rule with the
value it measured, its threshold and its verdict. A URL that is neither known nor fetchable is
reported as such. When the page cannot be fetched but its document is stored, the stored text is
judged instead (without the page's markup, so code and tables are told apart by the line rules).
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa

from aifactory.collect.decode import decode_body
from aifactory.collect.fetch import Fetcher, FetchError
from aifactory.collect.robots import ROBOTS_MAX_BYTES, header_optouts, robots_from_response, robots_url
from aifactory.collect.urls import normalize_url, origin_of
from aifactory.db import Database
from aifactory.db import rejections as rejection_log
from aifactory.db.schema import documents
from aifactory.settings import Settings
from aifactory.sources.files import SkippedFile, read_file
from aifactory.text import staging
from aifactory.text.pii import mask_pii
from aifactory.text.pipeline import (
    Judged,
    PipelineConfig,
    RawDocument,
    content_hash,
    extract,
    judge,
)
from aifactory.text.prose import CODE, NAVIGATION, PROSE, TABLE

MAX_POLITE_WAIT_SEC = 10.0  # the longest crawl delay waited between robots.txt and the page


@dataclass
class Explanation:
    url: str
    stored: list[dict] = field(default_factory=list)  # documents rows of the URL (and its parts)
    recorded: list[dict] = field(default_factory=list)  # rejections recorded for it, newest first
    source: str = ""  # what was judged: "staged page", "fetched page", "local file", "stored text"
    source_note: str = ""  # how it was obtained (HTTP status, size...)
    fetch_error: str = ""  # why it could not be fetched
    extraction_failed: str = ""  # no_text, extract_error, extract_timeout
    parts: list[Judged] = field(default_factory=list)
    same_text_as: dict[str, str] = field(default_factory=dict)  # part URL -> stored URL with that text

    @property
    def known(self) -> bool:
        return bool(self.stored or self.recorded or self.source)


def explain(settings: Settings, db: Database, target: str, *, fetch: bool = True) -> Explanation:
    url, path = _locate(target)
    found = Explanation(url)
    found.stored = _stored(db, url)
    found.recorded = rejection_log.for_url(db, url)
    raw = staging.staged_page(db, url)
    if raw is not None:
        found.source, found.source_note = "staged page", "fetched by the crawler, waiting for the text engine"
    elif path is not None:
        raw = _read_local(path, url, found)
    elif url.startswith(("http://", "https://")) and fetch:
        raw = asyncio.run(_fetch(settings, url, found))
    elif not fetch:
        found.fetch_error = "fetching is turned off (--no-fetch)"
    if raw is None and found.stored:
        found.source = "stored text"
        found.source_note = "the page itself could not be had: its stored document is judged"
        raw = RawDocument(
            url=url, body="\n\n".join(row["text"] for row in found.stored), content_type="text/plain"
        )
    if raw is None:
        return found
    config = PipelineConfig.from_settings(settings)
    extracted = extract(raw, config)
    if isinstance(extracted, str):
        found.extraction_failed = extracted
        return found
    found.parts = judge(url, extracted, config)
    for part in found.parts:
        text = mask_pii(part.text)[0] if config.mask_pii else part.text
        with db.read() as conn:
            same = conn.execute(
                sa.select(documents.c.url).where(documents.c.content_hash == content_hash(text))
            ).scalar()
        if same is not None:
            found.same_text_as[part.url] = same
    return found


def _locate(target: str) -> tuple[str, Path | None]:
    """The URL to look up, and the local file it names (a path or a file:// URL), if any."""
    if target.startswith("file://"):
        return target, Path(unquote(urlsplit(target).path))
    if "://" not in target and Path(target).exists():
        path = Path(target).resolve()
        return path.as_uri(), path
    url = target if "://" in target else f"http://{target}"
    return normalize_url(url) or target, None


def _stored(db: Database, url: str) -> list[dict]:
    query = (
        sa.select(documents)
        .where(sa.or_(documents.c.url == url, documents.c.url.startswith(f"{url}#part-", autoescape=True)))
        .order_by(documents.c.id)
    )
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def _read_local(path: Path, url: str, found: Explanation) -> RawDocument | None:
    try:
        raws = list(read_file(path))
    except (SkippedFile, OSError, UnicodeError) as exc:
        found.fetch_error = str(exc)
        return None
    if len(raws) != 1:
        found.fetch_error = f"{path} holds {len(raws)} documents; explain their URLs one by one"
        return None
    found.source, found.source_note = "local file", f"{path.stat().st_size / 1024:.0f} KB"
    return raws[0]


async def _fetch(settings: Settings, url: str, found: Explanation) -> RawDocument | None:
    """One polite GET, as the crawler would do it: robots.txt first, then the page after the delay."""
    token = settings.crawler_user_agent
    async with Fetcher(settings, max_connections=2) as fetcher:
        rules = None
        if settings.crawler_respect_robots:
            try:
                answer = await fetcher.get(
                    robots_url(origin_of(url)),
                    max_bytes=ROBOTS_MAX_BYTES,
                    types=None,
                    truncate=True,
                    follow_other_origins=True,
                )
                status = 0 if answer.redirect_to else answer.status
                body = decode_body(answer.body, answer.charset or "utf-8")[0]
            except FetchError as exc:
                if exc.kind == "unsafe_address":
                    found.fetch_error = (
                        f"not fetched: {exc.detail or exc.kind} (see CRAWLER_PRIVATE_ALLOWLIST)"
                    )
                    return None
                status, body = (404, "") if "redirect" in exc.kind else (0, "")
            rules = robots_from_response(status, body)
            if rules is None:
                found.fetch_error = (
                    "not fetched: the site's robots.txt is unreachable (the crawler waits too)"
                )
                return None
            if not rules.allows(url, token):
                found.fetch_error = f"not fetched: robots.txt disallows it for {token}"
                return None
            delay = rules.crawl_delay(token) or settings.crawler_domain_min_interval_sec
            await asyncio.sleep(min(MAX_POLITE_WAIT_SEC, delay))
        try:
            response = await fetcher.get(url, may_fetch=lambda hop: rules is None or rules.allows(hop, token))
        except FetchError as exc:
            found.fetch_error = f"not fetched: {exc}"
            return None
    if response.redirect_to is not None:
        found.fetch_error = f"it redirects to {response.redirect_to} (another site): explain that URL"
        return None
    if response.status != 200:
        found.fetch_error = f"the server answered HTTP {response.status}"
        return None
    text, charset = decode_body(response.body, response.charset)
    optouts = header_optouts(response.headers, token) if settings.crawler_respect_robots else []
    if rules is not None and settings.crawler_respect_robots and rules.ai_optout(url):
        optouts.append(rules.ai_optout(url))
    found.source = "fetched page"
    found.source_note = (
        f"HTTP 200, {response.mime or 'no type'}, {charset}, {len(response.body) / 1024:.0f} KB"
    )
    if optouts:
        found.source_note += f"; the site opts out of AI training ({', '.join(optouts)})"
    return RawDocument(
        url=url, final_url=response.final_url, body=text, content_type=response.mime or "text/html"
    )


# --- output ---------------------------------------------------------------------------------------


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 10 else f"{value:.4g}"


def render(found: Explanation) -> list[str]:
    lines = [found.url]
    for row in found.stored:
        lines.append(
            f"  stored: document {row['id']} ({row['url']}), {row['language']}, {row['char_count']} chars, "
            f"quality {row['quality_score']:.2f}, "
            + ("trainable" if row["allowed_for_training"] else f"not trainable ({row['block_reason']})")
        )
    for row in found.recorded:
        where = f" {row['detail']}" if row["detail"] else ""
        lines.append(
            f"  recorded: dropped {_when(row['created_at'])} as {row['reason']}{where}: "
            f"{_number(row['value'])} against {_number(row['threshold'])} ({row['url']})"
        )
    if not found.known:
        reason = found.fetch_error or "only http(s) URLs and local files can be fetched"
        lines.append(f"  unknown: not in the database, and it could not be fetched ({reason})")
        return lines
    if not found.stored and not found.recorded:
        lines.append("  not in the database (never stored or dropped here)")
    if not found.source:
        lines.append(f"  not judged now: {found.fetch_error or 'fetching was turned off'}")
        return lines
    lines.append(f"  judged now: the {found.source} ({found.source_note})")
    if found.extraction_failed:
        lines.append(f"  verdict: dropped, {found.extraction_failed} (no text to judge)")
        return lines
    for part in found.parts:
        lines.extend(_render_part(part, found.same_text_as.get(part.url)))
    return lines


def _render_part(part: Judged, same_text_as: str | None) -> list[str]:
    kinds = {kind: part.prose.chars(kind) for kind in (PROSE, CODE, TABLE, NAVIGATION)}
    lines = [
        f"  {part.url}: {len(part.text)} chars, language {part.language.code} "
        f"({part.language.confidence:.2f}); prose {kinds[PROSE]}, code {kinds[CODE]}, "
        f"tables {kinds[TABLE]}, navigation {kinds[NAVIGATION]} chars",
        f"    {'rule':<20} {'part':<7} {'variant':<11} {'value':>10}   {'threshold':<12} verdict",
    ]
    for check in part.verdict.checks:
        bound = ">=" if check.bound == "min" else "<="
        lines.append(
            f"    {check.rule:<20} {check.part:<7} {check.detail:<11} {_number(check.value):>10}   "
            f"{bound + ' ' + _number(check.threshold):<12} {'pass' if check.passed else 'FAIL'}"
        )
    failed = part.verdict.failed
    if failed is None:
        verdict = f"kept (quality score {part.verdict.score:.2f})"
    else:
        where = f" ({failed.where})" if failed.where else ""
        verdict = (
            f"dropped: {failed.rule}{where}, {_number(failed.value)} against {_number(failed.threshold)}"
        )
    lines.append(f"    verdict: {verdict}")
    if same_text_as and same_text_as != part.url:
        lines.append(f"    duplicate: the same text is stored as {same_text_as}")
    return lines


def as_dict(found: Explanation) -> dict:
    def clean(row: dict) -> dict:
        return {key: value for key, value in row.items() if key not in ("text", "minhash", "content_hash")}

    return {
        "url": found.url,
        "known": found.known,
        "stored": [clean(row) for row in found.stored],
        "recorded": found.recorded,
        "source": found.source,
        "source_note": found.source_note,
        "fetch_error": found.fetch_error,
        "extraction_failed": found.extraction_failed,
        "parts": [
            {
                "url": part.url,
                "chars": len(part.text),
                "language": part.language.code,
                "language_confidence": part.language.confidence,
                "accepted": part.verdict.accepted,
                "reason": part.verdict.reason,
                "score": part.verdict.score,
                "same_text_as": found.same_text_as.get(part.url),
                "checks": [
                    {
                        "rule": check.rule,
                        "part": check.part,
                        "variant": check.detail,
                        "value": check.value,
                        "threshold": check.threshold,
                        "bound": check.bound,
                        "passed": check.passed,
                    }
                    for check in part.verdict.checks
                ],
            }
            for part in found.parts
        ],
    }
