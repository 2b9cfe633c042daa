"""Container health check for the qdrant-sift reranker over the standard gRPC health protocol.

Why a script of our own: Docker's HEALTHCHECK needs a command inside the image, and the usual
``grpc_health_probe`` binary is a download we do not want in the build. The image already holds
grpcio and grpcio-health-checking, so a few lines of Python speak ``grpc.health.v1`` directly.
Kubernetes does not need this file: it probes gRPC natively (``grpc: port: 50051``), except when
the server runs with TLS, where an ``exec`` probe with ``--tls-ca`` takes over.

Exit codes follow Docker's HEALTHCHECK contract: 0 healthy (SERVING), 1 unhealthy (anything
else, including an unreachable server or an expired deadline). Health stays open under the
service's bearer-token auth, so no token is sent.

Usage: ``python healthcheck.py [--host H] [--port P] [--service S] [--timeout SECONDS]
[--tls-ca FILE [--server-name NAME]]``; each flag falls back to ``QDRANT_SIFT_HEALTH_<FLAG>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["HEALTHY", "UNHEALTHY", "build_parser", "check", "main"]

HEALTHY = 0
UNHEALTHY = 1


def _env(name: str, default: str) -> str:
    return os.environ.get(f"QDRANT_SIFT_HEALTH_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="gRPC health check (grpc.health.v1) for qdrant-sift")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="server address")
    p.add_argument("--port", type=int, default=int(_env("PORT", "50051")), help="gRPC port")
    p.add_argument(
        "--service",
        default=_env("SERVICE", ""),
        help="service name to ask about; empty means the server as a whole",
    )
    p.add_argument("--timeout", type=float, default=float(_env("TIMEOUT", "3")), help="seconds")
    p.add_argument(
        "--tls-ca",
        default=_env("TLS_CA", "") or None,
        help="PEM file of the CA (or the self-signed cert) that signed the server's certificate",
    )
    p.add_argument(
        "--server-name",
        default=_env("SERVER_NAME", "") or None,
        help="name to verify the certificate against when it differs from --host",
    )
    return p


def check(
    host: str,
    port: int,
    *,
    service: str = "",
    timeout: float = 3.0,
    tls_ca: bytes | None = None,
    server_name: str | None = None,
) -> str:
    """Ask the server's health service once; return the status name ("SERVING", ...).

    Transport failures come back as ``"UNREACHABLE: <grpc status>"`` instead of raising, so
    the caller decides what unhealthy means.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls_ca is not None:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        creds = grpc.ssl_channel_credentials(root_certificates=tls_ca)
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            return f"UNREACHABLE: {getattr(code, 'name', code)}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tls_ca: bytes | None = None
    if args.tls_ca:
        try:
            with open(args.tls_ca, "rb") as fh:
                tls_ca = fh.read()
        except OSError as exc:
            print(f"unhealthy: cannot read --tls-ca {args.tls_ca}: {exc}", file=sys.stderr)
            return UNHEALTHY
    status = check(
        args.host,
        args.port,
        service=args.service,
        timeout=args.timeout,
        tls_ca=tls_ca,
        server_name=args.server_name,
    )
    healthy = status == "SERVING"
    print(f"{'healthy' if healthy else 'unhealthy'}: {status}", file=sys.stderr)
    return HEALTHY if healthy else UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
