"""Turning fetched bytes into training documents: extract, normalise, identify language, judge
quality, mask personal data, and fingerprint for near-duplicate detection. Pure functions; the
pipeline (`aifactory.text.pipeline`) composes them and the database steps."""
