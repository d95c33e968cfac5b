"""Collection: the polite, distributed web crawler (frontier in the database) and its page hand-off.

urls.py       normalization, frontier keys, link scope, trap detection
safety.py     no fetching from loopback/private/link-local/multicast addresses
robots.py     robots.txt (protego) and the AI-training opt-out signals
fetch.py      one HTTP GET with timeouts, size caps, content types, redirects
decode.py     charsets, binary sniffing
links.py      out-links and robots/TDM meta of a page
politeness.py per-host pacing, per-node concurrency, page budgets
sink.py       FetchedPage and the PageSink interface (the default stores `pages` rows)
writer.py     batched transactions: page to the sink, URL marked, links queued, counters moved
crawler.py    one node's crawl loop over leased hosts
engine.py     the collector engine (cycles, seeds, sharding across collector nodes)
oneoff.py     `aifactory crawl URL... --max-pages N`
"""
