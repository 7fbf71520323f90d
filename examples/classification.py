"""Classification with Literal and Enum outputs: every answer is one of the labels, nothing else.

Labels are written as bare words (`negative`, not `"negative"`), the way a model answers in text.

    .venv/bin/python examples/classification.py
"""

import asyncio
import enum
from typing import Literal

import sdk


class Topic(enum.Enum):
    SPORTS = "sports"
    POLITICS = "politics"
    TECHNOLOGY = "technology"
    FOOD = "food"


Sentiment = Literal["positive", "negative", "neutral"]

HEADLINES = [
    "Local team wins the championship after a dramatic final.",
    "Parliament votes on the new budget law tonight.",
    "New phone chip doubles battery life.",
    "Ten-minute tomato soup: the recipe everyone asks for.",
]
REVIEWS = [
    "Absolutely loved it, the best purchase I made this year!",
    "It broke after two days and support never answered.",
    "Terrible quality, I want my money back.",
    "Great sound and fast delivery.",
]


async def main() -> None:
    llm = sdk.LLM()
    topic_calls = [llm.generate(f"What is the topic of this headline? {h}", output=Topic) for h in HEADLINES]
    sentiment_calls = [llm.generate(f"What is the sentiment of this review? {r}", output=Sentiment) for r in REVIEWS]
    results = await asyncio.gather(*topic_calls, *sentiment_calls)  # all eight batched together
    topics, sentiments = results[: len(HEADLINES)], results[len(HEADLINES) :]
    for headline, topic in zip(HEADLINES, topics):
        print(f"{topic.value:>10} | {headline}")
    for review, sentiment in zip(REVIEWS, sentiments):
        print(f"{sentiment:>10} | {review}")
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
