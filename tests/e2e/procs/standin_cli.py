"""`python -m tests.e2e.procs.standin_cli create-admin --email E [--password-stdin]`: auth's
CLI as the stand-in does it. Prints `email:` and `password:` lines; refuses an existing email."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path


def users_file() -> Path:
    """Where the stand-in auth keeps its users: beside the issuer's keys."""
    return Path(os.environ["JWT_KEYS_DIR"]) / "standin-users.json"


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-admin")
    create.add_argument("--email", required=True)
    create.add_argument("--password-stdin", action="store_true")
    args = parser.parse_args()
    path = users_file()
    users = json.loads(path.read_text()) if path.exists() else {}
    if args.email in users:
        print(f"error: {args.email} already exists", file=sys.stderr)
        return 1
    password = sys.stdin.readline().strip() if args.password_stdin else secrets.token_urlsafe(12)
    users[args.email] = password
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(users))
    print(f"email: {args.email}\npassword: {password}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
