"""Pulumi entry point; the program lives in stacks.program so tests and the demo run the same code."""

from stacks.program import main

main()
