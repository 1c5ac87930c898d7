#!/usr/bin/env python3
"""A KEDA-like client of wva-metrics-server's external scaler, written with
grpcio and stubs generated at run time from proto/externalscaler.proto.

Prints one JSON object per line:
  all    -> {"spec": {...}, "metrics": {...}, "active": bool}
  call   -> the answer of one RPC, or {"code": "NOT_FOUND", "details": "..."}
  watch  -> {"ready": value}, then {"changed": value} for each change of
            GetMetrics, until the value is --until (or one change without it)
  stream -> {"stream": bool, "at": seconds since the call} for each of the
            first --messages StreamIsActive messages (bounded by --timeout)
  streams -> {"open": n, "errors": [codes]}: --streams StreamIsActive calls on
             one channel (one HTTP/2 connection), held open together
"""
import argparse
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def load_stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="keda-stubs-")
    rc = protoc.main([
        "protoc",
        f"-I{proto_dir}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_dir, "externalscaler.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    import externalscaler_pb2
    import externalscaler_pb2_grpc
    return externalscaler_pb2, externalscaler_pb2_grpc


def emit(obj):
    print(json.dumps(obj), flush=True)


def error(e):
    return {"code": e.code().name, "details": e.details()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--proto-dir", required=True)
    p.add_argument("--name", default="scaledobject")
    p.add_argument("--namespace", default="")
    p.add_argument("--metadata", action="append", default=[], help="key=value")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--until", type=float, default=None)
    p.add_argument("--messages", type=int, default=1)
    p.add_argument("--cert", help="client certificate (PEM) for mTLS")
    p.add_argument("--key", help="client key (PEM) for mTLS")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--server-name", help="name to verify the server certificate against")
    p.add_argument("command", choices=["all", "spec", "metrics", "active", "watch", "stream", "streams"])
    a = p.parse_args()

    pb, pb_grpc = load_stubs(a.proto_dir)
    with open(a.ca, "rb") as f:
        ca = f.read()
    cert = key = None
    if a.cert:
        with open(a.cert, "rb") as f:
            cert = f.read()
        with open(a.key, "rb") as f:
            key = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    options = [("grpc.ssl_target_name_override", a.server_name)] if a.server_name else []
    channel = grpc.secure_channel(a.address, creds, options=options)
    stub = pb_grpc.ExternalScalerStub(channel)
    metadata = dict(kv.split("=", 1) for kv in a.metadata)
    ref = pb.ScaledObjectRef(name=a.name, namespace=a.namespace, scalerMetadata=metadata)

    def spec():
        r = stub.GetMetricSpec(ref, timeout=5)
        return [{"metricName": s.metricName, "targetSize": s.targetSize, "targetSizeFloat": s.targetSizeFloat}
                for s in r.metricSpecs]

    def metrics():
        name = spec()[0]["metricName"]
        r = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=name), timeout=5)
        return [{"metricName": v.metricName, "metricValue": v.metricValue, "metricValueFloat": v.metricValueFloat}
                for v in r.metricValues]

    def active():
        return stub.IsActive(ref, timeout=5).result

    try:
        if a.command == "all":
            emit({"spec": spec(), "metrics": metrics(), "active": active()})
        elif a.command == "spec":
            emit({"spec": spec()})
        elif a.command == "metrics":
            emit({"metrics": metrics()})
        elif a.command == "active":
            emit({"active": active()})
        elif a.command == "watch":
            first = metrics()[0]["metricValueFloat"]
            emit({"ready": first})
            deadline = time.monotonic() + a.timeout
            last = first
            while time.monotonic() < deadline:
                now = metrics()[0]["metricValueFloat"]
                if now != last:
                    emit({"changed": now})
                    last = now
                    if a.until is None or now == a.until:
                        return
                time.sleep(0.05)
            emit({"timeout": last})
        elif a.command == "streams":
            calls, opened, errors = [], 0, []
            for _ in range(a.streams):
                call = stub.StreamIsActive(ref, timeout=a.timeout)
                calls.append(call)
                try:
                    next(call)
                    opened += 1
                except grpc.RpcError as e:
                    errors.append(e.code().name)
            emit({"open": opened, "errors": errors})
            for call in calls:
                call.cancel()
        elif a.command == "stream":
            started = time.monotonic()
            seen = 0
            for msg in stub.StreamIsActive(ref, timeout=a.timeout):
                emit({"stream": msg.result, "at": round(time.monotonic() - started, 3)})
                seen += 1
                if seen >= a.messages:
                    break
    except grpc.RpcError as e:
        emit(error(e))


if __name__ == "__main__":
    main()
