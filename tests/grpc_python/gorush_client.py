"""A gorush gRPC client in Python, generated from proto/gorush/gorush.proto by
grpcio-tools (tests/grpc_python.rs runs it): Send to iOS and Android, then
Health/Check, against the address it is given. Prints one JSON line of what
it got; exits non-zero on any failure.

usage: gorush_client.py ADDRESS IOS_TOKEN ANDROID_TOKEN
(the generated modules must be on PYTHONPATH)
"""

import json
import sys

import grpc
from google.protobuf import struct_pb2

from gorush import gorush_pb2, gorush_pb2_grpc


def main() -> int:
    address, ios_token, android_token = sys.argv[1:4]
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        gorush = gorush_pb2_grpc.GorushStub(channel)
        data = struct_pb2.Struct()
        data.update({"order": "42"})
        ios = gorush.Send(
            gorush_pb2.NotificationRequest(
                platform=1,
                tokens=[ios_token],
                message="hello from python",
                title="grpcio",
                badge=1,
                topic="com.example.test",
                priority=gorush_pb2.NotificationRequest.HIGH,
                alert=gorush_pb2.Alert(subtitle="generated client"),
                data=data,
            ),
            timeout=30,
        )
        android = gorush.Send(
            gorush_pb2.NotificationRequest(
                platform=2,
                tokens=[android_token],
                message="hello from python",
                title="grpcio",
                data=data,
            ),
            timeout=30,
        )
        health = gorush_pb2_grpc.HealthStub(channel).Check(
            gorush_pb2.HealthCheckRequest(service=""), timeout=30
        )
    result = {
        "ios": {"success": ios.success, "counts": ios.counts},
        "android": {"success": android.success, "counts": android.counts},
        "health": gorush_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
    }
    print(json.dumps(result))
    ok = (
        ios.success
        and ios.counts == 1
        and android.success
        and android.counts == 1
        and result["health"] == "SERVING"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
