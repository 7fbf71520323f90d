"""Typed extraction from text: a nested Pydantic model, instructions, context and one worked example.

.venv/bin/python examples/extraction.py
"""

import asyncio

from pydantic import BaseModel, Field

import sdk


class LineItem(BaseModel):
    product: str = Field(max_length=40)
    quantity: int = Field(ge=1, le=1000)
    unit_price: float = Field(ge=0, le=10000)


class Order(BaseModel):
    customer: str = Field(max_length=40)
    items: list[LineItem] = Field(max_length=5)


EMAIL = "Hi, this is Maria Rossi. Please send me 3 notebooks at 2.50 each and 1 fountain pen at 18.00. Thanks!"


async def main() -> None:
    llm = sdk.LLM()
    prompt = sdk.Prompt(
        instructions="Extract the order from the customer's email.",
        constraints=["Use the prices written in the email", "One line item per product"],
        inputs=EMAIL,
        examples=[
            sdk.Example(
                input="Hello, John Smith here. I'd like 2 mugs at 6.00 each.",
                output=Order(customer="John Smith", items=[LineItem(product="mug", quantity=2, unit_price=6.0)]),
            )
        ],
    )
    order = await llm.generate(prompt, output=Order, max_tokens=160)
    print(order.model_dump_json(indent=2))
    total = sum(item.quantity * item.unit_price for item in order.items)
    print(f"order total: {total:.2f}")
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
