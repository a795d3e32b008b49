"""`python -m cli`: the `semo` command, for processes started without the console script."""

from cli.main import main

main()
