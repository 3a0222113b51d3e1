"""Runnable examples: ``python -m fastnet.examples.digits``."""
