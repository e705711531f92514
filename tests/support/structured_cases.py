"""Pydantic models and questions for structured-output tests and the benchmark: a nested
object with an enum, a list and an Optional; a list with a described integer and a
boolean; a list with an integer and an Optional."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Color(StrEnum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Address(BaseModel):
    city: str
    zip_code: str | None


class Person(BaseModel):
    name: str
    age: int
    favorite_color: Color
    address: Address
    hobbies: list[str]


class Event(BaseModel):
    title: str
    attendees: list[str]
    priority: int = Field(description="1 (low) to 5 (high)")
    done: bool


class Recipe(BaseModel):
    name: str
    ingredients: list[str]
    minutes: int
    vegetarian: bool
    notes: str | None


CASES: list[tuple[type[BaseModel], str]] = [
    (Person, "Tell me about a person who lives in Paris."),
    (Event, "Alice and Bob are meeting on Friday to discuss the budget."),
    (Recipe, "Give me a recipe for pancakes."),
]
