"""Concurrent calls: many `generate()` calls in flight on one LLM share each forward pass.

Eight extractions run one after another, then all at once; the engine batches the concurrent ones,
so they finish in a fraction of the time. Cancelling a call frees its memory at once.

    .venv/bin/python examples/concurrency.py
"""

import asyncio
import time

from pydantic import BaseModel, Field

import sdk


class City(BaseModel):
    city: str = Field(max_length=40)
    country: str = Field(max_length=40)


SENTENCES = [
    "I flew to Tokyo, Japan last spring.",
    "Our office is in Lyon, France.",
    "She grew up in Toronto, Canada.",
    "The conference is in Nairobi, Kenya.",
    "We met in Lima, Peru.",
    "He moved to Oslo, Norway.",
    "The factory is near Pune, India.",
    "They married in Porto, Portugal.",
]


async def main() -> None:
    llm = sdk.LLM()
    await llm.generate(SENTENCES[0], output=City)  # warm-up: compiles the grammar
    start = time.perf_counter()
    one_by_one = [await llm.generate(s, output=City) for s in SENTENCES]
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    together = await asyncio.gather(*(llm.generate(s, output=City) for s in SENTENCES))
    concurrent_s = time.perf_counter() - start
    for city in together:
        print(f"{city.city}, {city.country}")
    print(
        f"one at a time: {sequential_s:.1f} s; all at once: {concurrent_s:.1f} s "
        f"({sequential_s / concurrent_s:.1f}x faster); same answers: {one_by_one == together}"
    )

    slow = asyncio.create_task(llm.generate("Write a very long story.", max_tokens=400))
    await asyncio.sleep(1.0)
    slow.cancel()  # aborts the request in the engine and frees its KV blocks right away
    try:
        await slow
    except asyncio.CancelledError:
        print("cancelled the long story; its memory is already free")
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
