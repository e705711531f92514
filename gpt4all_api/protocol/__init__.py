"""Pydantic wire types of the OpenAI API subset we serve, ordered as in OpenAI's reference."""
