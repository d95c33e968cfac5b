"""Wikipedia articles through the MediaWiki API: random articles, and articles linked from them.

Plain-text extracts (TextExtracts) are stored as documents under CC BY-SA. The titles an article
links to are remembered and fetched in later cycles, so the collection wanders through related
articles instead of staying purely random. One call per second at most, per the API etiquette.
"""

from __future__ import annotations

import random
from urllib.parse import urlencode

from aifactory.collect.fetch import FetchError
from aifactory.sources.common import SourceRun, is_due, recall, remember, schedule
from aifactory.text.pipeline import RawDocument

CYCLE_SEC = 60.0
MIN_INTERVAL_SEC = 1.0
KEEP_LINKED = 200


def api_url(template: str, lang: str, **params: object) -> str:
    return f"{template.format(lang=lang)}?{urlencode({'format': 'json', 'formatversion': 2, **params})}"


async def poll_wikipedia(run: SourceRun) -> None:
    s = run.settings
    if not s.enable_wikipedia_collector or s.wikipedia_articles_per_cycle <= 0:
        return
    run.min_interval["wikipedia"] = MIN_INTERVAL_SEC
    for lang in s.wikipedia_languages:
        key = f"wikipedia:{lang}"
        if not run.mine(key) or not is_due(run.db, key):
            continue
        try:
            await collect_edition(run, lang, s.wikipedia_articles_per_cycle)
        except FetchError as exc:
            run.count("wikipedia_errors")
            run.count(f"wikipedia_errors_{exc.kind}")
            schedule(run.db, key, 300.0)
            continue
        schedule(run.db, key, CYCLE_SEC)


async def collect_edition(run: SourceRun, lang: str, count: int) -> None:
    template = run.settings.wikipedia_api_url
    state = recall(run.db, f"wikipedia:{lang}")
    linked: list[str] = state.get("linked", [])
    random.shuffle(linked)
    titles = linked[: count // 2]
    listing = await run.fetch_json(
        "wikipedia",
        api_url(template, lang, action="query", list="random", rnnamespace=0, rnlimit=count - len(titles)),
    )
    titles += [item["title"] for item in _dig(listing, "query", "random") if isinstance(item, dict)]
    seen = set(state.get("seen", []))
    new_links: list[str] = []
    for title in dict.fromkeys(titles):
        if title in seen:
            continue
        try:
            page = await fetch_article(run, lang, title)
        except FetchError:
            run.count("wikipedia_errors")
            continue
        if page is None:
            continue
        document, links = page
        run.documents.append(document)
        run.count("wikipedia_articles")
        seen.add(title)
        new_links += links
    remaining = [t for t in linked if t not in seen] + new_links
    remember(run.db, f"wikipedia:{lang}", {"linked": remaining[-KEEP_LINKED:], "seen": sorted(seen)[-2000:]})


async def fetch_article(run: SourceRun, lang: str, title: str) -> tuple[RawDocument, list[str]] | None:
    """The plain text of one article and the titles it links to (None if it has no text)."""
    data = await run.fetch_json(
        "wikipedia",
        api_url(
            run.settings.wikipedia_api_url,
            lang,
            action="query",
            prop="extracts|links|info",
            explaintext=1,
            exsectionformat="plain",
            titles=title,
            redirects=1,
            plnamespace=0,
            pllimit=20,
            inprop="url",
        ),
    )
    pages = _dig(data, "query", "pages")
    if not pages or not isinstance(pages[0], dict) or pages[0].get("missing"):
        return None
    page = pages[0]
    text = page.get("extract") or ""
    url = page.get("fullurl") or f"https://{lang}.wikipedia.org/wiki/{title.replace(' ', '_')}"
    if not text.strip():
        return None
    links = [link["title"] for link in page.get("links", []) if isinstance(link, dict) and "title" in link]
    document = RawDocument(
        url=url,
        body=f"{page.get('title', title)}\n\n{text}",
        content_type="text/plain",
        source="wikipedia",
        title=page.get("title", title),
        license_hint="cc-by-sa-4.0",
    )
    return document, links


def _dig(data: object, *keys: str) -> list:
    for key in keys:
        if not isinstance(data, dict):
            return []
        data = data.get(key)
    return data if isinstance(data, list) else []
