"""Streaming a partial object: each time a field completes, a partial Pydantic model, then the final one.

.venv/bin/python examples/streaming.py
"""

import asyncio

from pydantic import BaseModel, Field

import sdk


class Movie(BaseModel):
    title: str = Field(max_length=60)
    year: int = Field(ge=1880, le=2030)
    director: str = Field(max_length=60)
    genres: list[str] = Field(max_length=4)


async def main() -> None:
    llm = sdk.LLM()
    stream = llm.stream("Describe the movie Jurassic Park (1993) by Steven Spielberg.", output=Movie, max_tokens=96)
    async for movie in stream:
        done = ", ".join(sorted(movie.model_fields_set))
        print(f"fields so far: [{done}]  {movie!r}")
    print(f"final: {stream.result.value}; {stream.result.usage.completion_tokens} tokens")
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
