"""`python -m fer_bench` is the `fer-bench` command."""

from .cli import main

main()
