"""Tests of gpt4all_api/routers/."""
