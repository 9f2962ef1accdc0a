"""`python -m fleetexec` runs the CLI."""

from .cli import entry

if __name__ == "__main__":  # worker processes import this module too
    entry()
