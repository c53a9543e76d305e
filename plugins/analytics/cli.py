"""``herald tokens create|list|revoke``: manage The Eye's trusted clients from the shell.

Talks to a running server's admin API (``--url``, default
``http://HERALD_HOST:HERALD_PORT``), with ``HERALD_ADMIN_TOKEN`` as the bearer
token when it is set.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from engine import Config

__all__ = ["add_commands"]


def add_commands(commands: Any) -> None:
    tokens = commands.add_parser("tokens", help="manage The Eye's trusted clients (analytics)",
                                 description="Create, list and revoke the clients allowed to send events to The Eye.")
    tokens.add_argument("action", choices=["create", "list", "revoke"],
                        help="create a client (its token is shown once), list them, or revoke one")
    tokens.add_argument("name", nargs="?", help="the client's name (create, revoke)")
    tokens.add_argument("--url", help="the running server (default http://HERALD_HOST:HERALD_PORT)")
    tokens.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = Config.from_env()
    base = (args.url or config.self_url).rstrip("/") + "/v1/admin/tokens"
    headers = {"Authorization": f"Bearer {config.admin_token}"} if config.admin_token else {}
    if args.action != "list" and not args.name:
        print(f"herald tokens {args.action}: a NAME is required", file=sys.stderr)
        return 2
    try:
        if args.action == "create":
            response = httpx.post(base, json={"name": args.name}, headers=headers, timeout=30)
        elif args.action == "revoke":
            response = httpx.delete(f"{base}/{args.name}", headers=headers, timeout=30)
        else:
            response = httpx.get(base, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        print(f"herald: cannot reach {base}: {exc}", file=sys.stderr)
        return 2
    if not response.is_success:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        print(f"herald tokens {args.action}: {message} ({response.status_code})", file=sys.stderr)
        return 1
    body = response.json()
    if args.action == "create":
        print(f"created client {body['name']!r}; its token (shown only now):\n{body['token']}")
    elif args.action == "revoke":
        print(f"revoked client {body['name']!r} at {body['revoked_at']}")
    else:
        for client in body:
            state = "active" if client["active"] else f"revoked {client['revoked_at']}"
            print(f"{client['name']}\tcreated {client['created_at']}\t{state}")
        if not body:
            print("no clients yet: herald tokens create NAME")
    return 0
