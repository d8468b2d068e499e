"""The Typer command-line interface. Thin: parse, validate, call one function, map errors."""
