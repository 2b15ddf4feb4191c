"""``python -m pnpseg``: the same as the ``pnpseg`` command."""

from pnpseg.cli import main

if __name__ == "__main__":
    main()
