"""Agent loop: the model answers a two-step question with two Python tools (embedded model, CPU).

.venv/bin/python examples/agent.py

The model calls `get_country` for the city, then `get_population` for the country it got back, and
then writes a typed `Answer`. Every call it writes names a known tool with valid arguments (the
constraint guarantees it); which calls a 135M model makes, and whether the answer is right, is the
model's doing (on this question it gets Germany and 84,000,000, from the tools).
"""

import asyncio

from pydantic import BaseModel

import sdk

COUNTRIES = {"Paris": "France", "Berlin": "Germany", "Madrid": "Spain", "Rome": "Italy"}
POPULATIONS = {"France": 68_000_000, "Germany": 84_000_000, "Spain": 48_000_000, "Italy": 59_000_000}


def get_country(city: str) -> str:
    """The country a city is in.

    Args:
        city: the city's name, e.g. "Paris".
    """
    return COUNTRIES.get(city, "unknown")


async def get_population(country: str) -> int:
    """The population of a country.

    Args:
        country: the country's name, e.g. "France".
    """
    return POPULATIONS.get(country, 0)


class Answer(BaseModel):
    country: str
    population: int


QUESTION = (
    "How many people live in the country whose city is Berlin? First call get_country with the city, "
    "then call get_population with the country."
)


async def main() -> None:
    async with sdk.LLM() as llm:
        result = await llm.run_tools(QUESTION, [get_country, get_population], output=Answer, max_turns=3)
    print(repr(result.value))
    print(f"{result.usage.prompt_tokens} prompt + {result.usage.completion_tokens} completion tokens")


if __name__ == "__main__":
    asyncio.run(main())
