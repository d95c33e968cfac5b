"""Fixture pages in English and Japanese, as a crawler would receive them (with boilerplate)."""

from __future__ import annotations

NEWS_EN = [
    "The city council of Riverton voted on Tuesday evening to approve a new plan for the old "
    "railway yard, ending a debate that has lasted for more than ten years.",
    "Under the plan, the yard will be turned into a public park with a community garden, a small "
    "library branch and a path along the river. Construction is expected to begin next spring.",
    "Supporters of the project said that the neighbourhood has lacked green space for decades. "
    "Many residents told the council that their children have nowhere safe to play after school.",
    "Opponents argued that the land should have been sold to developers, which would have brought "
    "money to the city budget. The mayor replied that the park would raise the value of the homes "
    "around it and attract new businesses to the area.",
    "The council will publish the detailed design in the coming weeks, and residents will be able "
    "to comment on it at two public meetings in the town hall.",
]
NEWS_JA = [
    "川辺市議会は火曜日の夜、旧鉄道操車場の跡地を公園として整備する計画を賛成多数で可決した。"
    "十年以上にわたって続いてきた議論に、ようやく区切りがついた形だ。",
    "計画によると、跡地には市民農園や図書館の分館、川沿いの遊歩道を備えた公園がつくられる。"
    "工事は来年の春に始まる予定で、完成までにはおよそ二年かかる見通しだという。",
    "計画を支持する住民たちは、この地域には何十年も緑地が不足していたと訴えてきた。"
    "子どもたちが放課後に安心して遊べる場所がないという声も、議会で何度も取り上げられた。",
    "一方で、土地を開発業者に売却すれば市の財政に貢献できたはずだと反対する意見もあった。"
    "これに対して市長は、公園ができれば周辺の住宅の価値が上がり、新しい店も集まると説明した。",
    "市は今後数週間のうちに詳しい設計案を公表し、市役所で二回の説明会を開いて住民の意見を聞く方針だ。",
]
DOCS_EN = [
    "The configuration file is read once at start-up. Every option can also be given as an "
    "environment variable, which takes precedence over the file.",
    "To change the port the server listens on, set the port option and restart the service. "
    "The example below shows a minimal configuration that is enough for most installations.",
    "When the server starts, it checks that the data directory exists and that it can write to it. "
    "If the check fails, the server stops with an error message that names the directory.",
]
FORUM_EN = [
    "I have been trying to get my sourdough starter going for two weeks now, and it still does not "
    "rise much after feeding. I keep it on the kitchen counter and feed it once a day with equal "
    "weights of flour and water. Is there something obvious that I am doing wrong here?",
    "Two weeks is not that long, so do not give up yet. In my experience the temperature of the "
    "kitchen matters a lot, and a cold room slows everything down. Try moving the jar to a warmer "
    "place, such as the top of the fridge, and use some whole wheat flour for a few feedings.",
    "Thanks, that was exactly it. I moved it next to the oven and switched to half rye flour, and "
    "after three days it doubled within six hours of feeding. The bread I baked this weekend was "
    "the best one so far, with a much more open crumb than before.",
]
WIKI_EN = [
    "The common kingfisher is a small bird that lives near rivers, lakes and streams across much of "
    "Europe, Asia and North Africa. It is known for its bright blue back and orange underparts.",
    "The bird feeds mainly on small fish, which it catches by diving from a perch above the water. "
    "It also eats aquatic insects, tadpoles and small crustaceans when fish are scarce.",
    "Kingfishers nest in tunnels that they dig into the soft banks of rivers. The female lays between "
    "five and seven white eggs, and both parents take turns to sit on them for about three weeks.",
    "Hard winters can kill a large share of the population, but the species usually recovers within "
    "a few years because each pair can raise two or three broods in a single summer.",
]
WIKI_JA = [
    "カワセミは、ヨーロッパやアジア、北アフリカの川や湖の近くに広く分布する小さな鳥である。"
    "背中の鮮やかな青色と、胸からお腹にかけてのオレンジ色が特徴として知られている。",
    "主に小さな魚を食べ、水面の上にある枝などから飛び込んで獲物を捕らえる。"
    "魚が少ない時期には、水生昆虫やオタマジャクシ、小さなエビなども食べることがある。",
    "巣は川岸の柔らかい土手に掘ったトンネルの奥につくられる。"
    "メスは五個から七個の白い卵を産み、オスとメスが交代しながら約三週間あたためる。",
    "厳しい冬には多くの個体が死んでしまうこともあるが、一つのつがいが一夏に二回から三回子育てを"
    "するため、数年のうちに数が回復することが多い。",
]
SPAM_EN = ["Buy cheap watches online best price buy now cheap watches discount watches buy cheap"] * 30


def page(
    title: str,
    paragraphs: list[str],
    *,
    lang: str = "en",
    header: str = "Riverton Daily",
    footer: str = "Copyright Riverton Daily. All rights reserved.",
    extra_body: str = "",
) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title} | {header}</title></head>
<body>
<header><div class="logo">{header}</div>
<nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/sport">Sport</a></li>
<li><a href="/weather">Weather</a></li><li><a href="/contact">Contact</a></li></ul></nav></header>
<div class="cookie-banner">We use cookies to improve your experience.
<a href="/privacy">Privacy policy</a></div>
<main><article><h1>{title}</h1>
<p class="byline">By Jane Smith, 12 March 2024</p>
{body}
{extra_body}
</article>
<aside><h3>Related</h3><ul><li><a href="/a">Council approves budget</a></li>
<li><a href="/b">New bus line opens</a></li></ul></aside></main>
<footer><p>{footer}</p><a href="/terms">Terms of use</a></footer>
</body></html>"""


def docs_page() -> str:
    code = "<pre><code>[server]\nport = 8080\ndata_dir = /var/lib/app\n\n[log]\nlevel = info\n</code></pre>"
    return page(
        "Configuration", DOCS_EN, header="App Docs", footer="Documentation licence CC BY 4.0", extra_body=code
    )


def near_copy_of_news() -> str:
    """The same article syndicated by another site: different header, footer and navigation, and
    lightly edited, so the main text is near (not exactly) the same."""
    paragraphs = [NEWS_EN[0].replace("Tuesday evening", "Tuesday night"), *NEWS_EN[1:]]
    return page(
        "Council approves park plan",
        paragraphs,
        header="Valley Herald",
        footer="(c) Valley Herald Media Group. Reproduced with permission.",
    )


VOCABULARY = (
    "the of and to in that with for river bird garden council city people water morning evening "
    "village school road bridge market teacher doctor farmer winter summer autumn spring forest "
    "mountain valley lake harbour train station library museum window kitchen story letter music "
    "painting season harvest weather storm sunlight shadow journey friend family neighbour child "
    "walked found built carried opened wrote remembered noticed painted visited crossed gathered "
    "quiet bright narrow ancient careful gentle heavy early late distant small large green old new"
)


def varied_text(paragraphs: int, seed: int = 7) -> str:
    """Long, non-repetitive English-like prose (random sentences over a small vocabulary)."""
    import random

    rng = random.Random(seed)
    vocabulary = VOCABULARY.split()
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(3, 6)):
            words = [rng.choice(vocabulary) for _ in range(rng.randint(8, 16))]
            sentences.append(" ".join(words).capitalize() + ".")
        out.append(" ".join(sentences))
    return "\n\n".join(out)
