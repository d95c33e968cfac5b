"""Junk pages, written for the labelled evaluation set: what a crawler meets besides real text.

Each kind comes in English and Japanese and in a few variants (different seeds, sizes, wrappers),
inside the same kind of site chrome as real pages (header, navigation, footer), because that is how
the extractor sees them. Every page here must be rejected. The kinds:

- keyword stuffing: a few keywords repeated in every sentence, with filler between;
- SEO spam: one template sentence per city or product, the blank filled in;
- link farm: a long list of keyword links to other sites;
- navigation only: menus, breadcrumbs, tag clouds and a footer, no article;
- cookie wall: the consent dialog is all the page shows;
- sign-in wall and error page;
- machine garbage: character soup, an encoded blob, mojibake, random word salad without grammar;
- placeholder text: lorem ipsum, Japanese dummy text, "sample page" templates;
- product listing: generated catalogue rows.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass

CITIES_EN = (
    "Austin Boston Chicago Denver Houston Phoenix Seattle Portland Dallas Atlanta Miami Orlando Tampa "
    "Detroit Memphis Nashville Raleigh Richmond Omaha Tulsa"
).split()
CITIES_JA = (
    "東京 大阪 名古屋 札幌 福岡 仙台 広島 京都 神戸 横浜 千葉 埼玉 静岡 岡山 熊本 鹿児島 新潟 金沢 長野 那覇"
).split()
KEYWORDS_EN = "cheap flights best price hotel deals discount tickets book now online travel".split()
KEYWORDS_JA = "格安 航空券 最安値 ホテル 予約 比較 激安 ツアー 人気 ランキング 口コミ 送料無料".split()
SALAD_EN = (
    "quantum blender ambition velvet receipt orbit pillow sincere lantern asphalt doctrine marble "
    "gravity tulip envelope dynamic harvest spiral ticket ocean carbon whisper violin ladder "
    "monument frequency pepper canyon cushion ballot silver thunder"
).split()
SALAD_JA = (
    "机 宇宙 鉛筆 電車 未来 青い 走る 眼鏡 記憶 砂糖 窓 地図 静か 歯車 風船 時計 畑 雲 鍵 橋 "
    "計算 光 迷路 階段 夕焼け 手紙 粒子 傘 氷 森"
).split()


@dataclass(frozen=True)
class JunkPage:
    name: str  # kind-language-variant
    kind: str
    language: str
    html: str


def chrome(title: str, body: str, lang: str, *, site: str = "best-deals.example") -> str:
    """A page around `body`, with the header, menus and footer a real site has."""
    if lang == "ja":
        menu = "ホーム 会社概要 サービス 料金 よくある質問 お問い合わせ".split()
        foot = f"Copyright © {site} All Rights Reserved."
    else:
        menu = "Home About Services Pricing FAQ Contact".split()
        foot = f"Copyright © {site}. All rights reserved."
    nav = "".join(f'<li><a href="/{i}">{item}</a></li>' for i, item in enumerate(menu))
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><header><div class='logo'>{site}</div><nav><ul>{nav}</ul></nav></header>"
        f"<main>{body}</main><footer><p>{foot}</p></footer></body></html>"
    )


def paragraphs(texts: list[str]) -> str:
    return "".join(f"<p>{text}</p>" for text in texts)


def keyword_stuffing(lang: str, rng: random.Random) -> str:
    """Keywords in every sentence, glued with the filler words a real sentence would have."""
    keys = KEYWORDS_JA if lang == "ja" else KEYWORDS_EN
    fillers = (
        ["の", "は", "を", "で", "なら", "が"] if lang == "ja" else ["the", "and", "with", "for", "to", "of"]
    )
    sentences = []
    for _ in range(rng.randint(40, 70)):
        words = []
        for _ in range(rng.randint(6, 10)):
            words.append(rng.choice(keys))
            if rng.random() < 0.5:
                words.append(rng.choice(fillers))
        sentences.append(("".join(words) + "。") if lang == "ja" else (" ".join(words).capitalize() + "."))
    body = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
    title = "格安航空券 最安値 比較" if lang == "ja" else "Cheap flights best price"
    return chrome(title, f"<article><h1>{title}</h1>{paragraphs(body)}</article>", lang)


def seo_template(lang: str, rng: random.Random) -> str:
    if lang == "ja":
        templates = [
            "{c}で一番安い引越し業者をお探しなら、{c}の引越し見積もりは当サイトにお任せください。",
            "{c}の引越しなら当社が最安値です。{c}の引越し業者を今すぐ比較しましょう。",
        ]
        cities = CITIES_JA
    else:
        templates = [
            "Looking for the best plumber in {c}? Our {c} plumbers are the best plumbers in {c}.",
            "Call the cheapest {c} plumber today. The best plumbing service in {c} is here for you.",
        ]
        cities = CITIES_EN
    chosen = rng.sample(cities, k=rng.randint(12, len(cities)))
    body = [template.format(c=city) for city in chosen for template in templates]
    title = "引越し 見積もり 最安値" if lang == "ja" else "Best plumber near you"
    return chrome(title, f"<article><h1>{title}</h1>{paragraphs(body)}</article>", lang)


def link_farm(lang: str, rng: random.Random) -> str:
    keys = KEYWORDS_JA if lang == "ja" else KEYWORDS_EN
    cities = CITIES_JA if lang == "ja" else CITIES_EN
    items = []
    for i in range(rng.randint(60, 120)):
        anchor = (
            f"{rng.choice(cities)} {rng.choice(keys)} {rng.choice(keys)}"
            if lang == "en"
            else f"{rng.choice(cities)}の{rng.choice(keys)}{rng.choice(keys)}"
        )
        items.append(f'<li><a href="https://site{i}.example/{rng.randint(1, 999)}">{anchor}</a></li>')
    title = "おすすめリンク集" if lang == "ja" else "Useful links directory"
    return chrome(title, f"<h1>{title}</h1><ul>{''.join(items)}</ul>", lang)


def navigation_only(lang: str, rng: random.Random) -> str:
    if lang == "ja":
        sections = "ニュース 経済 スポーツ エンタメ 天気 地域 特集 ランキング 動画 写真".split()
        crumbs = "ホーム > カテゴリ > 一覧"
    else:
        sections = "News Business Sport Entertainment Weather Local Features Rankings Video Photos".split()
        crumbs = "Home > Category > Index"
    blocks = [f"<div class='breadcrumb'>{crumbs}</div>"]
    for _ in range(rng.randint(3, 6)):
        links = "".join(f'<li><a href="/{s}/{rng.randint(1, 99)}">{s}</a></li>' for s in sections)
        blocks.append(f"<nav><ul>{links}</ul></nav>")
    tags = " ".join(f'<a href="/tag/{i}">{rng.choice(sections)}</a>' for i in range(40))
    blocks.append(f"<div class='tags'>{tags}</div>")
    return chrome(sections[0], "".join(blocks), lang)


def cookie_wall(lang: str, rng: random.Random) -> str:
    partners = ", ".join(f"Partner {rng.randint(1, 999)}" for _ in range(rng.randint(5, 30)))
    if lang == "ja":
        texts = [
            "当サイトではCookieを使用しています。Cookieの使用に同意いただける場合は「すべて同意する」を押してください。",
            "Cookieの利用目的や設定の変更方法については、プライバシーポリシーおよびCookieポリシーをご覧ください。",
            "必要なCookieのみを許可する場合は「設定を管理」から選択できます。",
            "すべて同意する",
            "設定を管理",
            "プライバシーポリシー",
            "利用規約",
            f"当社と提携する広告パートナー（{partners}）がCookieを使用して情報を収集する場合があります。",
        ]
    else:
        texts = [
            "We use cookies to improve your experience, personalise content and analyse our traffic.",
            "By clicking Accept all cookies you agree to the storing of cookies on your device.",
            "You can change your cookie settings at any time. Read our cookie policy and privacy policy.",
            "Accept all cookies",
            "Reject non-essential cookies",
            "Manage cookie preferences",
            "Privacy policy",
            "Terms of use",
            f"We and our {rng.randint(100, 900)} partners ({partners}) store and access information "
            "on your device.",
        ]
    rng.shuffle(texts)
    return chrome("Cookie", f"<div class='consent'>{paragraphs(texts)}</div>", lang)


def sign_in_wall(lang: str, rng: random.Random) -> str:
    if lang == "ja":
        texts = [
            "この記事は会員限定です。続きを読むにはログインしてください。",
            "会員登録（無料）はこちら",
            "ログインしてください",
            "パスワードをお忘れの方",
            "利用規約とプライバシーポリシーに同意の上、会員登録してください。",
        ]
    else:
        texts = [
            "This article is for subscribers only. Sign in to continue reading.",
            "Create an account to read the full story.",
            "You must be logged in to view this page.",
            "Forgot your password?",
            "By signing up you agree to our terms of service and privacy policy.",
        ]
    rng.shuffle(texts)
    return chrome("Sign in", paragraphs(texts * rng.randint(1, 2)), lang)


def error_page(lang: str, rng: random.Random) -> str:
    if lang == "ja":
        texts = ["404 Not Found", "お探しのページが見つかりません。", "トップページに戻る"]
    else:
        texts = ["404 Not Found", "The page you are looking for could not be found.", "Back to home"]
    return chrome("404", paragraphs(texts), lang)


def character_soup(lang: str, rng: random.Random) -> str:
    alphabet = (
        "あいうえおカキクケコ漢字記号＃＄％" if lang == "ja" else "abcdefghijklmnopqrstuvwxyz0123456789#$%&*"
    )
    body = [
        " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(3, 14))) for _ in range(60))
        for _ in range(8)
    ]
    return chrome("x", paragraphs(body), lang)


def encoded_blob(lang: str, rng: random.Random) -> str:
    blob = base64.b64encode(rng.randbytes(6000)).decode()
    lines = [blob[i : i + 76] for i in range(0, len(blob), 76)]
    intro = "データ:" if lang == "ja" else "Data:"
    return chrome("data", f"<p>{intro}</p>" + paragraphs(lines), lang)


MOJIBAKE_JA = [
    "川辺市議会は火曜日の夜、旧鉄道操車場の跡地を公園として整備する計画を賛成多数で可決した。",
    "計画によると、跡地には市民農園や図書館の分館、川沿いの遊歩道を備えた公園がつくられる。",
    "工事は来年の春に始まる予定で、完成までにはおよそ二年かかる見通しだという。",
    "子どもたちが放課後に安心して遊べる場所がないという声も、議会で何度も取り上げられた。",
]
MOJIBAKE_EN = [
    "The café’s naïve “déjà vu” menu — a résumé of the coöperative’s façade — was reprinted.",
    "Crème brûlée, jalapeño and piñata: the señor’s smörgåsbord was über-popular in Zürich.",
    "Ça va? Señora Müller’s naïveté about the fiancée’s rôle was the talk of the soirée.",
]


def mojibake(lang: str, rng: random.Random) -> str:
    """Text decoded with the wrong charset, as a broken server sends it: UTF-8 read as windows-1252
    or as Shift_JIS (undecodable bytes then become U+FFFD), or Shift_JIS read as latin-1."""
    sources = MOJIBAKE_JA if lang == "ja" else MOJIBAKE_EN
    body = []
    for _ in range(rng.randint(10, 20)):
        text = " ".join(rng.choice(sources) for _ in range(3))
        if lang == "ja" and rng.random() < 0.5:
            body.append(text.encode("cp932").decode("latin-1"))
        elif lang == "ja":
            body.append(text.encode("utf-8").decode("cp1252", errors="replace"))
        else:
            body.append(text.encode("utf-8").decode("shift_jis", errors="replace"))
    return chrome("page", paragraphs(body), lang)


def word_salad(lang: str, rng: random.Random) -> str:
    """Random nouns strung together (variant 0 bare, the others with particles or stop words and
    sentence punctuation, as spinner tools produce)."""
    words = SALAD_JA if lang == "ja" else SALAD_EN
    glue = ["の", "は", "を", "に", "が"] if lang == "ja" else ["the", "of", "and", "to", "with", "a"]
    body = []
    for _ in range(rng.randint(8, 14)):
        units = []
        for _ in range(rng.randint(40, 80)):
            units.append(rng.choice(words))
            if rng.random() < 0.4:
                units.append(rng.choice(glue))
            if rng.random() < 0.1:
                units.append("。" if lang == "ja" else ".")
        body.append(("" if lang == "ja" else " ").join(units))
    return chrome("page", paragraphs(body), lang)


LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
    "commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur"
).split()
DUMMY_JA = [
    "この文章はダミーです。",
    "文字の大きさ、量、字間、行間等を確認するために入れています。",
    "ここにテキストが入ります。",
    "サンプルテキストです。",
    "ここに見出しが入ります。",
]
DUMMY_EN = [
    "This is a sample page.",
    "Replace this text with your own content to tell visitors about your business.",
    "Click here to edit this paragraph.",
    "Your headline goes here.",
    "Add a short description of your product in this space.",
]


def placeholder(lang: str, rng: random.Random) -> str:
    """Template text nobody replaced: Lorem ipsum (variant 0), the site builder's sample sentences."""
    body = []
    for _ in range(rng.randint(5, 10)):
        if lang == "en" and rng.random() < 0.5:
            words = [rng.choice(LOREM) for _ in range(rng.randint(20, 40))]
            body.append(" ".join(words).capitalize() + ".")
        else:
            sample = DUMMY_JA if lang == "ja" else DUMMY_EN
            body.append(
                ("" if lang == "ja" else " ").join(rng.choice(sample) for _ in range(rng.randint(3, 8)))
            )
    return chrome("Sample page", paragraphs(body), lang)


def product_listing(lang: str, rng: random.Random) -> str:
    rows = []
    for i in range(rng.randint(40, 80)):
        price = rng.randint(500, 99_999)
        if lang == "ja":
            rows.append(f"<p>商品番号 {1000 + i} 激安セール ¥{price} 送料無料 カートに入れる</p>")
        else:
            rows.append(
                f"<p>Item #{1000 + i} - Special offer ${price / 100:.2f} - Free shipping - Add to cart</p>"
            )
    return chrome("Shop", "".join(rows), lang)


KINDS = {
    "keyword_stuffing": keyword_stuffing,
    "seo_template": seo_template,
    "link_farm": link_farm,
    "navigation_only": navigation_only,
    "cookie_wall": cookie_wall,
    "sign_in_wall": sign_in_wall,
    "error_page": error_page,
    "character_soup": character_soup,
    "encoded_blob": encoded_blob,
    "mojibake": mojibake,
    "word_salad": word_salad,
    "placeholder": placeholder,
    "product_listing": product_listing,
}
VARIANTS = 3


def junk_pages(language: str) -> list[JunkPage]:
    pages = []
    for kind, make in KINDS.items():
        for variant in range(VARIANTS):
            rng = random.Random(f"{kind}-{language}-{variant}")
            pages.append(JunkPage(f"{kind}-{language}-{variant}", kind, language, make(language, rng)))
    return pages
