"""``pumer-export serve``: run a Triton Inference Server on a pumer-export model repository."""

from __future__ import annotations

import argparse

from ._common import port, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start a Triton Inference Server on a repository written by `pumer-export triton`",
        description=(
            "Start a Triton server on REPO (the binary from --tritonserver, the PATH, or the nvidia-pytriton "
            "package), with the Python models importing this pumer-export and TensorRT plans getting the plugin "
            "library preloaded; wait until it is ready, then serve until Ctrl-C, which stops it cleanly."
        ),
        epilog="example: pumer-export serve triton-repo --http-port 8000",
    )
    parser.add_argument("repo", metavar="REPO", help="model repository (pumer-export triton)")
    parser.add_argument("--http-port", type=port, default=8000, metavar="P", help="default 8000")
    parser.add_argument("--grpc-port", type=port, default=8001, metavar="P", help="default 8001")
    parser.add_argument("--metrics-port", type=port, default=8002, metavar="P", help="default 8002")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--tritonserver", metavar="PATH", default=None, help="the tritonserver binary to run")
    parser.add_argument("--plugins", metavar="LIB", default=None, help="pumer plugin library for TensorRT plans")
    parser.add_argument("--log", metavar="FILE", default=None, help="append the server's output to FILE")
    parser.add_argument("--startup-timeout", type=positive_int, default=180, metavar="S", help="default 180")
    parser.set_defaults(func=run)


def _stop_on_sigterm() -> None:
    """SIGTERM (kill, systemd, Kubernetes) stops the server cleanly like Ctrl-C does."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    import time

    from ..console import info
    from ..triton.server import running_server

    from ..errors import PumerExportError

    ports = {"--http-port": args.http_port, "--grpc-port": args.grpc_port, "--metrics-port": args.metrics_port}
    if len(set(ports.values())) < len(ports):
        raise PumerExportError("--http-port, --grpc-port and --metrics-port must differ, got "
                               + ", ".join(f"{k} {v}" for k, v in ports.items()))
    _stop_on_sigterm()
    with running_server(args.repo, http_port=args.http_port, grpc_port=args.grpc_port,
                        metrics_port=args.metrics_port, host=args.host, tritonserver=args.tritonserver,
                        plugins=args.plugins, startup_timeout=args.startup_timeout, log=args.log) as process:
        info(f"Triton is ready: HTTP {args.host}:{args.http_port}, gRPC {args.grpc_port}, metrics "
             f"{args.metrics_port} (Ctrl-C stops it)")
        try:
            while process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            info("stopping the server")
            return 0
    info(f"the server exited with status {process.returncode}")
    return 1 if process.returncode else 0
