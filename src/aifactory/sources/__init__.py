"""Sources of documents besides the link-following crawl: Wikipedia, feeds, Hacker News, arXiv, local
files. Each turns its input into `RawDocument`s for the text pipeline; pages they merely point at
(feed articles, HN links) go to the crawler's frontier, so politeness and robots.txt apply to them."""
