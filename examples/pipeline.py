"""A data pipeline: typed extraction over many customer messages with `llm.map`, then validation of the output.

Every prompt is in flight at once (the engine batches them); each outcome is a value or an error,
so one bad record never ends the batch. The results are written as JSON Lines and checked with
`sdk.validate`, as `stencil validate` would check them.

    .venv/bin/python examples/pipeline.py
"""

import asyncio
import json
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

import sdk


class Order(BaseModel):
    product: str = Field(max_length=40)
    quantity: int = Field(ge=1, le=1000)


MESSAGES = [
    "Please send me 3 boxes of green tea.",
    "I'd like to order 12 notebooks for the office.",
    "Two bicycles helmets, size M, thanks.",
    "We need 40 folding chairs for Saturday.",
    "Add 1 espresso machine to my order.",
    "Could you ship 6 bottles of olive oil?",
]


async def main() -> None:
    out = Path(tempfile.mkdtemp()) / "orders.jsonl"
    async with sdk.LLM() as llm:
        with out.open("w", encoding="utf-8") as results:
            async for item in llm.map(MESSAGES, output=Order, ordered=False, max_tokens=48):
                if item.error is not None:
                    print(f"#{item.index}: {type(item.error).__name__}: {item.error}")
                    continue
                print(f"#{item.index}: {item.value!r}")
                results.write(item.value.model_dump_json() + "\n")
    report = sdk.validate(Order, out)
    print(json.dumps(report.summary()), "valid" if report.is_valid else report.violations)


if __name__ == "__main__":
    asyncio.run(main())
