"""Tests for voca_client.py against an in-process Gateway server on loopback.

Run with: python3 -m unittest discover -s tests/python
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import voca_client  # noqa: E402

CLIENT = Path(__file__).resolve().parent / "voca_client.py"


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLIENT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class VocaClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.stub_dir = tempfile.TemporaryDirectory(prefix="voca-test-stubs-")
        voca_client.generate_stubs(voca_client.DEFAULT_PROTO_DIR, Path(cls.stub_dir.name))
        messages, services = voca_client.import_stubs(Path(cls.stub_dir.name))

        class FakeGateway(services.GatewayServicer):
            """Gateway that serves one vendor, "rosies-bakery", from pool-0."""

            def SendMessage(self, request, context):
                if request.vendor_id != "rosies-bakery":
                    context.abort(grpc.StatusCode.NOT_FOUND, f"vendor {request.vendor_id} not found")
                return messages.SendMessageResponse(
                    text=f"echo: {request.text}",
                    pool_id="pool-0",
                    ring_version=7,
                    message_id=request.message_id or "assigned-id",
                    character_name="Rosie",
                )

            def Route(self, request, context):
                return messages.RouteResponse(
                    pool_id="pool-0", address="127.0.0.1:7001", ring_version=7, ring_size=0
                )

        cls.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        services.add_GatewayServicer_to_server(FakeGateway(), cls.server)
        port = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()
        cls.target = f"127.0.0.1:{port}"

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop(grace=None)
        cls.stub_dir.cleanup()

    def test_check_stubs_lists_gateway_methods(self) -> None:
        result = run_client("--check-stubs")
        self.assertEqual(result.returncode, 0, result.stderr)
        summary = json.loads(result.stdout)
        self.assertEqual(summary["service"], "voca.v1.Gateway")
        self.assertEqual(summary["methods"], ["Route", "SendMessage"])

    def test_send_prints_response_fields(self) -> None:
        result = run_client(
            "send", "--target", self.target, "--vendor", "rosies-bakery",
            "--user", "web:amelia", "--text", "hello", "--message-id", "m-1",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        response = json.loads(result.stdout)
        self.assertEqual(response["text"], "echo: hello")
        self.assertEqual(response["pool_id"], "pool-0")
        self.assertEqual(response["message_id"], "m-1")
        self.assertEqual(response["character_name"], "Rosie")
        # proto3 JSON encodes uint64 as a string.
        self.assertEqual(response["ring_version"], "7")

    def test_route_prints_default_fields(self) -> None:
        result = run_client("route", "--target", self.target, "--vendor", "rosies-bakery")
        self.assertEqual(result.returncode, 0, result.stderr)
        response = json.loads(result.stdout)
        self.assertEqual(response["address"], "127.0.0.1:7001")
        self.assertEqual(response["ring_size"], 0)

    def test_unknown_vendor_exits_3(self) -> None:
        result = run_client(
            "send", "--target", self.target, "--vendor", "nobody",
            "--user", "web:amelia", "--text", "hello",
        )
        self.assertEqual(result.returncode, 3, result.stderr)
        error = json.loads(result.stdout)
        self.assertEqual(error["code"], "NOT_FOUND")
        self.assertEqual(error["details"], "vendor nobody not found")

    def test_missing_command_exits_2(self) -> None:
        result = run_client()
        self.assertEqual(result.returncode, 2)


if __name__ == "__main__":
    unittest.main()
