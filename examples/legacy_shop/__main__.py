"""`python -m examples.legacy_shop [--port 8080] [--database shop.db]`: serve the shop."""

from __future__ import annotations

import argparse

import uvicorn

from examples.legacy_shop.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.legacy_shop")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--database", default="legacy_shop.db", help="the SQLite file")
    args = parser.parse_args()
    uvicorn.run(create_app(f"sqlite:///{args.database}"), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
