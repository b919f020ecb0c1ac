"""Helpers shared by the library's entry points (command-line configuration)."""
