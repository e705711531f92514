"""Completions and chat completions on top of any ``Engine``.

``service`` owns a request from admission to release; ``planning`` turns a request into
choice plans; ``choice`` runs one choice (stop sequences, exact usage); ``bodies`` builds
the OpenAI JSON shapes; ``streaming`` sends a generation as Server-Sent Events.
"""
