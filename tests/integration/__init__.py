"""Integration tests: the whole HTTP app as a real server process (or image), real models."""
