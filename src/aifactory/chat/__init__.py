"""Chat tuning (issue #18): conversations ingested from files and built from the corpus, the
conversation windows mixed into training with the loss on assistant tokens only, and the chat part
of the evaluation. docs/chat.md describes it."""
