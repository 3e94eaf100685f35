"""Subcommands that are not a library of their own."""
