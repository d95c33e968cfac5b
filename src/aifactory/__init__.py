"""AI Factory Engine: collect web text, train a language model on it continuously, serve it."""

__version__ = "0.1.0"
