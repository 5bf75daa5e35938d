"""Start an OpenAI-compatible API server with continuous batching.

Binds to 127.0.0.1 unless --host says otherwise. Endpoints: / (a chat page),
/health, /v1/models, /v1/ps, /v1/models/{id}/load and /unload,
/v1/chat/completions, /v1/completions and /metrics.

Across several ranks: mlx.launch -n 2 --backend ring -- mlxk2 serve --model M --distributed
(rank 0 binds and answers; the other ranks follow it), or let mlxk2 run mlx.launch:
mlxk2 serve --hostfile hosts.json --model M.
"""

from __future__ import annotations

import argparse
import logging
import os

from mlxk2.commands import _distributed
from mlxk2.commands._common import API_KEY_ENV, add_engine_arguments
from mlxk2.errors import ValidationError
from mlxk2.output.sink import Output


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 1-65535, got {value}")
    return value


def _stop_on_signals() -> None:
    """Let SIGINT and SIGTERM stop start-up (uvicorn takes both over once it runs).

    A parent may have started us with SIGINT ignored (background jobs, test
    runners); the server must still stop when told to.
    """
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Model to preload and use when a request names none")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8000, help="Port (default: %(default)s)")
    parser.add_argument("--max-tokens", type=_positive, default=None,
                        help="Cap on generated tokens per request (default: the context size)")
    parser.add_argument("--api-key", default=None,
                        help=f"Require 'Authorization: Bearer KEY' on /v1 and /metrics "
                             f"(or set {API_KEY_ENV})")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="Allow this browser origin (repeatable; CORS is off without it)")
    parser.add_argument("--keep-alive", default="5m",
                        help="Unload a model idle this long: 30s, 5m, 1h, never (default: 5m)")
    parser.add_argument("--max-loaded-models", type=_positive, default=1,
                        help="Models kept in memory, least recently used evicted (default: 1)")
    parser.add_argument("--max-concurrency", type=_positive, default=8,
                        help="Requests decoded together in one batch (default: 8)")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="Requests that may wait for a slot before 503 (default: 64)")
    parser.add_argument("--prompt-cache", type=int, default=16, metavar="N",
                        help="Keep the KV cache of the last N requests per model, so a prompt "
                             "that begins like one of them (the next turn of a chat) skips "
                             "that part of prefill; 0 turns it off (default: 16)")
    parser.add_argument("--responses-store", type=int, default=256, metavar="N",
                        help="Keep the last N stored /v1/responses answers in memory for "
                             "previous_response_id and GET/DELETE; 0 stores none "
                             "(default: 256)")
    parser.add_argument("--max-n", type=_positive, default=8, metavar="N",
                        help="Most choices (n) one request may ask for (default: 8)")
    parser.add_argument("--shutdown-grace", default="10s", metavar="DURATION",
                        help="After SIGINT/SIGTERM, refuse new requests (503) and give running "
                             "ones this long to finish before aborting them: 0, 30s, 2m, "
                             "never; a second signal aborts at once (default: 10s)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error", "critical"])
    parser.add_argument("--log-json", action="store_true", help="Log one JSON object per line")
    parser.add_argument("--no-ui", dest="ui", action="store_false",
                        help="Do not serve the chat page at /")
    _distributed.add_arguments(parser)
    _distributed.add_launch_arguments(parser)
    add_engine_arguments(parser)


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.server import ModelProvider, ServerConfig, Worker, create_app, parse_duration
    from mlxk2.server.provider import engine_loader
    from mlxk2.server.runner import bind_socket, configure_logging, run_app

    config = ServerConfig(
        host=args.host,
        port=args.port,
        model=args.model,
        max_tokens=args.max_tokens,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        cors_origins=tuple(args.cors_origin),
        keep_alive=parse_duration(args.keep_alive),
        max_loaded_models=args.max_loaded_models,
        max_concurrency=args.max_concurrency,
        max_queue=max(0, args.max_queue),
        prompt_cache=max(0, args.prompt_cache),
        responses_store=max(0, args.responses_store),
        max_n=args.max_n,
        log_level=args.log_level,
        log_json=args.log_json,
        shutdown_grace=parse_duration(args.shutdown_grace),
        cpu_dtype=args.cpu_dtype,
        threads=args.threads,
        ui=args.ui,
    )
    _distributed.check_arguments(args)
    if (args.distributed or args.hostfile) and config.max_loaded_models > 1:
        raise ValidationError("--distributed serves one model at a time; "
                              "leave --max-loaded-models at 1")
    if (args.distributed or args.hostfile) and (args.cpu_dtype == "float32" or args.threads):
        raise ValidationError("--cpu-dtype float32 and --threads apply to single-machine "
                              "serving; --distributed keeps the model as stored")
    if args.starting_port is not None and args.hostfile is None:
        raise ValidationError("--starting-port needs --hostfile")
    if args.hostfile is not None:
        _distributed.exec_launcher(_distributed.launcher_command(
            args, "serve", add_arguments, json_mode=out.json))
    configure_logging(config.log_level, config.log_json)
    log = logging.getLogger("mlxk2.server")  # one log format, JSON included
    fault = _distributed.ServeFault()
    leader = _distributed.join(args, fault.report) if args.distributed else None
    if args.distributed and leader is None:
        return 0  # a follower: rank 0 binds, answers and decides
    try:
        sock = bind_socket(config.host, config.port)  # a busy port fails before any model loads
    except BaseException:
        if leader is not None:
            leader.stop()
        raise
    worker = Worker() if leader is None else _distributed.serving_worker(leader, fault)
    worker.start()
    if leader is None:
        # Bound on the MLX thread before any load there imports mlx (a distributed
        # rank bound it before joining its group).
        from mlxk2.engine.blas import ensure_blas, server_threads

        worker.call(ensure_blas, config.threads or server_threads()).result()
    provider = ModelProvider(
        worker,
        max_loaded=config.max_loaded_models,
        keep_alive=config.keep_alive,
        max_batch=config.max_concurrency,
        prompt_cache=config.prompt_cache,
        loader=engine_loader(config.cpu_dtype, config.threads),
        open_batch=getattr(worker, "open_batch", None),
    )
    data = {"host": config.host, "port": config.port, "model": config.model,
            "stopped": True}
    _stop_on_signals()
    try:
        if config.model:
            log.info("loading %s ...", config.model)
            provider.preload(config.model)
    except KeyboardInterrupt:
        sock.close()
        worker.stop(timeout=1)
        return _stopped(out, data, log_json=config.log_json)
    except BaseException:
        sock.close()
        worker.stop()
        raise
    url = f"http://{config.host}:{config.port}"
    loopback = config.host in ("127.0.0.1", "localhost", "::1")
    scope = "loopback only" if loopback else "reachable from the network"
    log.info("mlxk2 server on %s (%s); OpenAI base URL %s/v1", url, scope, url)
    if config.ui:
        log.info("chat page on %s/", url)
    if not loopback and config.api_key is None:
        log.warning("listening beyond this machine without --api-key: anyone who can "
                    "reach %s can use it", url)
    app = create_app(config, provider)
    fault.state = app.state.mlxk
    run_app(app, config, sock)
    return _stopped(out, data, log_json=config.log_json)


def _stopped(out: Output, data: dict[str, object], *, log_json: bool) -> int:
    """The closing line: a log record with --log-json, so a log shipper sees only JSON."""
    if log_json:
        logging.getLogger("mlxk2.server").info("Server stopped.")
        return out.success("server", data)
    return out.success("server", data, render=lambda d, o: "Server stopped.")
