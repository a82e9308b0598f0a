"""``python -m normlab``: the command line."""

from normlab.cli import main

if __name__ == "__main__":
    main()
