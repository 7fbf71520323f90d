"""Quickstart: typed extraction and classification with the embedded model (about a minute on 2 cores).

.venv/bin/python examples/quickstart.py
"""

import asyncio
from typing import Literal

from pydantic import BaseModel, Field

import sdk


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=130)
    occupation: str = Field(max_length=40)


Sentiment = Literal["positive", "negative", "neutral"]

REVIEWS = [
    "Absolutely loved it, the best purchase I made this year!",
    "It broke after two days and support never answered.",
    "The box arrived on Tuesday.",
]


async def main() -> None:
    llm = sdk.LLM()  # SmolLM2-135M-Instruct, embedded in the package: no download

    # Typed extraction: the model can only write JSON that validates as a Person.
    person = await llm.generate("Ada Lovelace was a 36-year-old English mathematician.", output=Person)
    print(repr(person))

    # Classification with a Literal and few-shot examples; the three calls are batched by the engine.
    examples = [
        sdk.Example(input="I love this phone, it is fantastic.", output="positive"),
        sdk.Example(input="Worst service ever, I want a refund.", output="negative"),
        sdk.Example(input="The package contains two cables.", output="neutral"),
    ]
    labels = await asyncio.gather(
        *(
            llm.generate(
                sdk.Prompt(instructions="Classify the sentiment of the review.", inputs=review, examples=examples),
                output=Sentiment,
            )
            for review in REVIEWS
        )
    )
    for review, label in zip(REVIEWS, labels):
        print(f"{label:>8}  {review}")

    # The result object: raw text, token usage and timings alongside the value.
    result = await llm.run("Grace Hopper, 85, was a computer scientist and rear admiral.", output=Person)
    print(result.value)
    print(f"text: {result.text}")
    print(
        f"{result.usage.completion_tokens} tokens, {result.timings.total:.2f} s, "
        f"first token after {result.timings.time_to_first_token:.2f} s, "
        f"{result.timings.mask_time * 1000:.1f} ms computing masks"
    )
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
