"""Subcommands of `lmp-data`."""
