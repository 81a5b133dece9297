"""Probes a Waveguide gRPC server with grpcio (Google's gRPC stack, not ours).

Usage: grpc_probe.py HOST:PORT TOKEN METHOD

Prints one JSON line: the grpc.health.v1 status (called without credentials), and the status
code of the unary METHOD (e.g. /waveguide.v1.ModuleService/HealthCheck, sent an empty message)
called without a token, with a wrong token and with TOKEN.
"""

import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def call(channel, method, metadata):
    rpc = channel.unary_unary(method)  # raw bytes in and out: no generated stubs needed
    try:
        reply = rpc(b"", metadata=metadata, timeout=5)
        return {"code": "OK", "bytes": len(reply)}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


def main():
    target, token, method = sys.argv[1:4]
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        out = {
            "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
            "no_token": call(channel, method, None),
            "wrong_token": call(channel, method, [("authorization", "Bearer wrong")]),
            "token": call(channel, method, [("authorization", f"Bearer {token}")]),
        }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
