"""Conversations built from the corpus, without any outside model, and marked synthetic.

Two kinds, each in the page's language (Japanese or English phrasing; other languages are left out):
- definition: an encyclopaedic page (source "wikipedia") gives "What is TITLE?" / "TITLEとは何ですか？",
  answered by its lead paragraph;
- howto: a documentation page (source "docs", or any page with section headings kept by the text
  pipeline, text/sections.py) gives one "How do I ...?" question per section heading, answered by
  the section's text.

Every conversation keeps the page's URL (`source_url`) and the document it came from, so it is
checked against the source policies like the page was, and its key is the page's URL and the question:
a page that changes gives new versions of its conversations. The answers are the page's own words:
what the model learns here is the template (answer, then <|end|>), not new facts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import sqlalchemy as sa

from aifactory.chat import store
from aifactory.chat.conversation import Conversation
from aifactory.db import kv
from aifactory.db import policies as policy_db
from aifactory.db.database import Database
from aifactory.db.schema import documents
from aifactory.settings import Settings
from aifactory.text.sections import section_texts

ENCYCLOPAEDIC = ("wikipedia",)
DOCUMENTATION = ("docs",)
LANGUAGES = ("en", "ja")
MIN_ANSWER_CHARS = 40
MAX_ANSWER_CHARS = 1500
MAX_SECTIONS_PER_PAGE = 8
WATERMARK_KEY = "chat.synthetic.last_doc_id"
BATCH_DOCUMENTS = 200

# "Installing Foo" -> "install Foo": the gerunds documentation headings start with most often.
GERUNDS = {
    "installing": "install", "configuring": "configure", "using": "use", "creating": "create",
    "running": "run", "setting": "set", "adding": "add", "building": "build", "starting": "start",
    "writing": "write", "reading": "read", "updating": "update", "upgrading": "upgrade",
    "removing": "remove", "deleting": "delete", "testing": "test", "debugging": "debug",
    "deploying": "deploy", "changing": "change", "managing": "manage", "connecting": "connect",
    "getting": "get", "making": "make", "handling": "handle", "choosing": "choose", "enabling": "enable",
    "disabling": "disable", "migrating": "migrate", "importing": "import", "exporting": "export",
}  # fmt: skip
VERBS = set(GERUNDS.values()) | {"install", "configure", "use", "set", "define", "write", "call"}
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")
_NUMBERING = re.compile(r"^(\d+(\.\d+)*\.?|[IVX]+\.)\s+")


def definition_question(title: str, language: str) -> str:
    return f"{title}とは何ですか？" if language == "ja" else f"What is {title}?"


def howto_question(heading: str, title: str, language: str) -> str:
    heading = _NUMBERING.sub("", heading).strip().rstrip(":：")
    if language == "ja":
        return (
            f"{title}で「{heading}」はどうすればいいですか？"
            if title
            else f"「{heading}」はどうすればいいですか？"
        )
    words = heading.split()
    first = words[0].lower() if words else ""
    if first in GERUNDS:
        action = " ".join([GERUNDS[first], *words[1:]])
    elif first in VERBS:
        action = " ".join([first, *words[1:]])
    elif first == "how" and len(words) > 2 and words[1].lower() == "to":
        action = " ".join(words[2:])
    else:
        action = (
            f"deal with {heading[:1].lower() + heading[1:]}"
            if heading[:1].isupper() and not heading.isupper()
            else f"deal with {heading}"
        )
    where = f" in {title}" if title and title.lower() not in heading.lower() else ""
    return f"How do I {action.rstrip('?')}{where}?"


def page_title(title: str, sections: list) -> str:
    """The page's own name: its first top-level heading, else the <title> without the site's name
    ("Configuration | App Docs" -> "Configuration")."""
    for _, level, heading in sections:
        if int(level) == 1:
            return str(heading)[:200]
    title = " ".join(title.split())
    for separator in (" | ", " - ", " — ", " – ", " :: ", "｜", " ｜ "):
        if separator in title:
            title = title.split(separator, 1)[0].strip()
    return title[:200]


def lead_paragraph(text: str) -> str:
    """The first paragraph long enough to be an answer, cut at a sentence end when too long."""
    for paragraph in re.split(r"\n\s*\n|\n", text):
        paragraph = paragraph.strip()
        if len(paragraph) >= MIN_ANSWER_CHARS and not paragraph.startswith(("#", "|", "=")):
            return clip(paragraph)
    return ""


def clip(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    ends = [m.end() for m in _SENTENCE_END.finditer(cut) if m.end() > limit // 3]
    return cut[: ends[-1]].strip() if ends else cut.rsplit(" ", 1)[0].strip()


def conversations_of(
    *, url: str, title: str, text: str, language: str, source_type: str, sections: list | None
) -> Iterator[tuple[str, Conversation]]:
    """(key, conversation) pairs a stored document gives; none for languages other than ja and en."""
    if language not in LANGUAGES or not title.strip():
        return
    title = page_title(title, sections or [])
    if source_type in ENCYCLOPAEDIC:
        answer = lead_paragraph(text)
        if answer:
            yield (
                f"synthetic:{url}#definition",
                _made(definition_question(title, language), answer, url, language, "definition"),
            )
    if sections and (source_type in DOCUMENTATION or source_type not in ENCYCLOPAEDIC):
        made = 0
        for level, heading, body in section_texts(text, sections):
            answer = clip(body.split("\n\n", 3)[0] if len(body) > MAX_ANSWER_CHARS else body)
            if level == 1 or len(answer) < MIN_ANSWER_CHARS or heading.strip() == title:
                continue
            question = howto_question(heading, title, language)
            yield f"synthetic:{url}#howto:{heading[:200]}", _made(question, answer, url, language, "howto")
            made += 1
            if made >= MAX_SECTIONS_PER_PAGE:
                break


def _made(question: str, answer: str, url: str, language: str, kind: str) -> Conversation:
    return Conversation(
        messages=(("user", question), ("assistant", answer)),
        format=kind,
        source_url=url,
        synthetic=True,
        language=language,
    )


def build(settings: Settings, db: Database, *, max_documents: int = BATCH_DOCUMENTS) -> Counter[str]:
    """Conversations from the documents stored since the last call (a watermark in system_config);
    nothing when ENABLE_SYNTHETIC_CHAT is off."""
    outcome: Counter[str] = Counter()
    if not settings.enable_synthetic_chat:
        return outcome
    after = int(kv.get_value(db, WATERMARK_KEY, "0") or 0)
    c = documents.c
    query = (
        sa.select(c.id, c.url, c.final_url, c.title, c.text, c.language, c.source_type, c.sections)
        .where(c.id > after, c.allowed_for_training.is_(True), c.language.in_(LANGUAGES))
        .order_by(c.id)
        .limit(max_documents)
    )
    with db.read() as conn:
        rows = list(conn.execute(query))
    if not rows:
        return outcome
    languages = settings.languages()
    items = [
        store.Keyed(key, "corpus", conversation, doc_id=int(row.id))
        for row in rows
        for key, conversation in conversations_of(
            url=row.final_url or row.url,
            title=row.title,
            text=row.text,
            language=row.language,
            source_type=row.source_type,
            sections=row.sections,
        )
        if not languages or conversation.language in languages
    ]
    if items:
        outcome = store.store(db, items, policy_db.load(db), val_fraction=settings.chat_val_fraction)
    outcome["chat.synthetic.documents"] = len(rows)
    kv.set_value(db, WATERMARK_KEY, str(int(rows[-1].id)))
    return outcome
