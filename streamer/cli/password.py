"""`streamer password`: a password's hash for http.auth.password_hash."""

from __future__ import annotations

import argparse
import sys

from streamer.errors import StreamerError


def add(sub) -> None:
    sub.add_parser("password", help="print the hash of a password for http.auth.password_hash (reads it from "
                                     "the terminal, or one line of standard input)")


def run(args: argparse.Namespace) -> int:
    import getpass

    from streamer.auth import hash_password

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise StreamerError("a password needs 8 characters or more")
    print(hash_password(password))
    return 0
