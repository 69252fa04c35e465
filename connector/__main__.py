"""`python -m connector` is the `deskroute` command."""

from connector.cli import main

main()
