"""Small helpers every part of loraswap shares: the one way to open the database, to write
times and JSONL, to take a quantile, and the one chat-row schema.

A leaf: it imports nothing of ours, so any part may import it without pulling in another
(tests/test_layering.py holds the line).
"""
