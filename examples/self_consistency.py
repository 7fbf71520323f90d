"""Self-consistency on arithmetic word problems: several reasoning paths, one vote on the answer.

Each call samples 5 reasoning paths in one batch (they share the prompt's KV blocks), parses each
final answer as an int, and returns the most voted one with the vote distribution.

    .venv/bin/python examples/self_consistency.py
"""

import asyncio

import sdk

PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have now?", 7),
    ("A box holds 6 eggs. How many eggs are in 2 boxes?", 12),
    ("Sara had 10 candies and ate 3 of them. How many candies are left?", 7),
]


async def main() -> None:
    llm = sdk.LLM()
    for problem, expected in PROBLEMS:
        result = await llm.run(
            problem, output=int, reasoning=True, samples=5, seed=0, max_tokens=96, max_reasoning_tokens=64
        )
        votes = ", ".join(f"{vote.value}: {vote.count}" for vote in result.votes.candidates)
        print(
            f"{problem}\n    answer {result.value} (expected {expected}); votes {votes}; "
            f"{result.votes.num_invalid} invalid; {result.usage.completion_tokens} tokens"
        )
        print(f"    winning reasoning: {result.reasoning[:160]!r}")
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
