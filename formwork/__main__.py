"""`python -m formwork ...`: the `formwork` command (how `formwork run` starts its children)."""

from formwork.cli import main

main(prog_name="formwork")
