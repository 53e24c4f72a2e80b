"""``python -m agents_persistence``: the same as the ``agents-persistence`` command."""

from agents_persistence.cli import main

if __name__ == "__main__":
    main()
