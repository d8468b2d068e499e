"""Entry point for ``python -m zk0cli``."""

from zk0cli.cli.app import main

if __name__ == "__main__":
    main()
