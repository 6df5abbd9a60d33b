"""`python -m streamer` and the `streamer` command: Ctrl-C while the heavy libraries import is an interruption
like any other, not a traceback."""

import sys


def main() -> int:
    try:
        from streamer.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        print("streamer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
