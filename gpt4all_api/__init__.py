"""gpt4all-api: an OpenAI-compatible server for gpt4all models."""

__version__ = "0.1.0"
