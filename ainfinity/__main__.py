"""`python -m ainfinity ...` (and the `ainfinity` command): see `ainfinity.cli`."""

from ainfinity.cli import main

if __name__ == "__main__":
    main()
