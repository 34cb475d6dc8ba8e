"""Goals as the benchmark reports them: a measured value against its limit, MET or MISSED."""

from __future__ import annotations

from typing import Any

Goal = tuple[str, Any, bool, str]  # name, measured value, met, what it is held against


def at_most(name: str, value: float, limit: float) -> Goal:
    """Decided on the unrounded measured ratio itself."""
    return (name, value, value <= limit, f"limit {limit}")


def render(title: str, goals: list[Goal], into: dict[str, Any]) -> list[str]:
    """The goals' lines under ``title``; also recorded under ``into["goals"]`` for bench-results.json."""
    lines = ["", title]
    for name, value, met, limit in goals:
        shown = f"{value:.4f}" if isinstance(value, float) else value
        lines.append(f"  {'MET   ' if met else 'MISSED'} {name}: {shown} ({limit})")
    into["goals"] = {name: {"value": value, "met": met, "limit": limit} for name, value, met, limit in goals}
    return lines
