"""Run the test Hub by hand: ``python -m tests.hub --port 8080 --seed org/model=./folder``."""

from __future__ import annotations

import argparse
import contextlib
import threading
from pathlib import Path

from .server import DEFAULT_TOKEN, Hub, HubServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.hub", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="Main port (0: any free port)")
    parser.add_argument("--lfs-port", type=int, default=0, help="LFS storage port")
    parser.add_argument("--token", action="append", default=[],
                        help=f"Accepted token (repeatable; default {DEFAULT_TOKEN})")
    parser.add_argument("--seed", action="append", default=[], metavar="ORG/NAME=DIR",
                        help="Serve DIR's files as repo ORG/NAME (repeatable)")
    args = parser.parse_args()
    hub = Hub(tuple(args.token) or (DEFAULT_TOKEN,))
    for item in args.seed:
        repo_id, _, folder = item.partition("=")
        hub.seed(repo_id, Path(folder))
    with HubServer(hub, args.host, args.port, args.lfs_port) as server:
        print(f"Test Hub at {server.url} (LFS storage at {server.lfs_url}); Ctrl-C to stop.",
              flush=True)
        print(f"  export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
