"""A Lark-grammar output: SQL SELECT queries that always parse, run on a real SQLite database.

The output is constrained by the SQL SELECT grammar shipped with Stencil (`grammars/library`), so
every answer is a syntactically valid read-only query; we run each one against an in-memory SQLite
database built from the tables the question describes.

    .venv/bin/python examples/sql_select.py
"""

import asyncio
import sqlite3

import grammars
import sdk
from grammars.library import library_grammar

SQL_SELECT = grammars.Lark(library_grammar("sql_select"))
DATABASE = """
CREATE TABLE employees (name TEXT, salary INTEGER, department TEXT);
INSERT INTO employees VALUES ('Ana', 5200, 'Sales'), ('Ben', 4100, 'Support'), ('Chloe', 6100, 'Sales');
CREATE TABLE products (name TEXT, price REAL, stock INTEGER);
INSERT INTO products VALUES ('kettle', 25.0, 0), ('mug', 6.0, 40), ('teapot', 32.5, 0);
"""
QUESTIONS = [
    "Table employees(name, salary, department). Write an SQL query that lists the names of employees "
    "in the Sales department.",
    "Table products(name, price, stock). Write an SQL query that lists the products that are out of stock.",
    "Table employees(name, salary, department). Write an SQL query for the highest salary.",
]


async def main() -> None:
    llm = sdk.LLM()
    database = sqlite3.connect(":memory:")
    database.executescript(DATABASE)
    queries = await asyncio.gather(*(llm.generate(q, output=SQL_SELECT, max_tokens=48) for q in QUESTIONS))
    for question, query in zip(QUESTIONS, queries):
        try:
            rows = database.execute(query).fetchall()
        except sqlite3.Error as exc:  # valid syntax can still name a column the table lacks
            rows = f"SQLite error: {exc}"
        print(f"{question}\n    {query}\n    -> {rows}")
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
