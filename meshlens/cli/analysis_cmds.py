"""Subcommands (filled in by their feature)."""

COMMANDS: list = []
