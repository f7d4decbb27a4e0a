#!/usr/bin/env python3
"""Command-line gRPC client for the Voca mesh gateway and its vendor API.

Generates Python stubs from the repository's proto/ directory into a temporary
directory with grpc_tools.protoc on every run, so no generated code is stored
in the repository. Prints each response as one JSON object on stdout, with
proto field names and fields that hold their default value.

Exit status: 0 on success, 1 if stub generation fails, 2 on a usage error,
3 if the server returns a gRPC error (printed as {"code": ..., "details": ...}).

Examples:
    voca_client.py send --target 127.0.0.1:50051 --vendor rosies-bakery \\
        --user web:amelia --text "How much is a sourdough loaf?"
    voca_client.py route --target 127.0.0.1:50051 --vendor rosies-bakery
    voca_client.py register --target 127.0.0.1:50051 --vendor crumb --name "Crumb & Co" \\
        --type retail --offering "rye bread at £3.40 a loaf"
    voca_client.py delete --target 127.0.0.1:50051 --vendor crumb
    voca_client.py --check-stubs
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import inspect
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType

DEFAULT_PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
PROTO_FILES = ("voca/v1/gateway.proto", "voca/v1/pool.proto", "voca/v1/registry.proto")
DEFAULT_TIMEOUT_SECONDS = 10.0

EXIT_STUB_GENERATION_FAILED = 1
EXIT_RPC_ERROR = 3


class StubGenerationError(Exception):
    """Raised when protoc fails on the repository's proto files."""


def generate_stubs(proto_dir: Path, out_dir: Path) -> None:
    """Run grpc_tools.protoc on PROTO_FILES, writing *_pb2 modules to out_dir."""
    from grpc_tools import protoc

    for relative in PROTO_FILES:
        if not (proto_dir / relative).is_file():
            raise StubGenerationError(f"proto file not found: {proto_dir / relative}")

    # grpc_tools ships the well-known types (google/protobuf/*.proto).
    well_known_dir = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--proto_path={well_known_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    status = protoc.main(args)
    if status != 0:
        raise StubGenerationError(f"grpc_tools.protoc exited with status {status} on {proto_dir}")


class Stubs:
    """The generated gateway and registry modules."""

    def __init__(self, out_dir: Path) -> None:
        # The generated *_pb2_grpc modules import "voca.v1.*_pb2", so out_dir
        # must be first on sys.path, ahead of any other package named voca.
        sys.path.insert(0, str(out_dir))
        importlib.invalidate_caches()
        self.messages = importlib.import_module("voca.v1.gateway_pb2")
        self.services = importlib.import_module("voca.v1.gateway_pb2_grpc")
        self.registry_messages = importlib.import_module("voca.v1.registry_pb2")
        self.registry_services = importlib.import_module("voca.v1.registry_pb2_grpc")


def import_stubs(out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """Import the generated gateway modules, returning (gateway_pb2, gateway_pb2_grpc)."""
    stubs = Stubs(out_dir)
    return stubs.messages, stubs.services


def message_to_dict(message) -> dict:
    """Convert a response to a dict with proto field names, including default values."""
    from google.protobuf import json_format

    parameters = inspect.signature(json_format.MessageToDict).parameters
    # protobuf 5.26 renamed including_default_value_fields.
    if "always_print_fields_with_no_presence" in parameters:
        defaults = {"always_print_fields_with_no_presence": True}
    else:
        defaults = {"including_default_value_fields": True}
    return json_format.MessageToDict(message, preserving_proto_field_name=True, **defaults)


def check_stubs(messages: ModuleType, services: ModuleType) -> dict:
    """Return a summary of the Gateway service found in the generated stubs."""
    descriptor = messages.DESCRIPTOR.services_by_name["Gateway"]
    methods = sorted(method.name for method in descriptor.methods)
    stub_class = services.GatewayStub
    return {
        "proto_files": list(PROTO_FILES),
        "service": descriptor.full_name,
        "methods": methods,
        "stub": stub_class.__name__,
    }


def call_gateway(args: argparse.Namespace, messages: ModuleType, services: ModuleType):
    """Send one request to the gateway at args.target and return the response."""
    import grpc

    with grpc.insecure_channel(args.target) as channel:
        stub = services.GatewayStub(channel)
        if args.command == "send":
            request = messages.SendMessageRequest(
                vendor_id=args.vendor,
                user_id=args.user,
                text=args.text,
                message_id=args.message_id,
            )
            if args.platform is not None:
                request.platform = args.platform
            return stub.SendMessage(request, timeout=args.timeout)
        request = messages.RouteRequest(vendor_id=args.vendor)
        return stub.Route(request, timeout=args.timeout)


def call_registry(args: argparse.Namespace, stubs: Stubs):
    """Send one VendorRegistry request to args.target and return the response."""
    import grpc

    messages = stubs.registry_messages
    with grpc.insecure_channel(args.target) as channel:
        stub = stubs.registry_services.VendorRegistryStub(channel)
        if args.command == "register":
            profile = messages.BusinessProfile(
                name=args.name,
                business_type=args.type,
                description=args.description,
                opening_hours=args.hours,
                location=args.location,
                offerings=args.offering,
                policies=args.policy,
            )
            request = messages.RegisterVendorRequest(vendor_id=args.vendor, profile=profile)
            return stub.RegisterVendor(request, timeout=args.timeout)
        request = messages.DeleteVendorRequest(vendor_id=args.vendor)
        return stub.DeleteVendor(request, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Call the Voca mesh Gateway service and print the response as JSON.",
        epilog="Exit status: 0 success, 1 stub generation failed, 2 usage error, 3 gRPC error.",
    )
    parser.add_argument(
        "--proto-dir",
        type=Path,
        default=DEFAULT_PROTO_DIR,
        help="directory that contains voca/v1/*.proto (default: %(default)s)",
    )
    parser.add_argument(
        "--check-stubs",
        action="store_true",
        help="generate and import the stubs, print the Gateway methods found, and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_common(command: argparse.ArgumentParser) -> None:
        command.add_argument("--target", required=True, help="gateway address as HOST:PORT")
        command.add_argument("--vendor", required=True, help="vendor id")
        command.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_SECONDS,
            help="call deadline in seconds (default: %(default)s)",
        )

    send = commands.add_parser("send", help="call Gateway.SendMessage")
    add_common(send)
    send.add_argument("--user", required=True, help="customer's user id")
    send.add_argument("--text", required=True, help="customer's message")
    send.add_argument(
        "--message-id",
        default="",
        help="message id for idempotent retries (default: empty, so the gateway assigns one)",
    )
    send.add_argument("--platform", help="messaging platform, such as whatsapp or web")

    route = commands.add_parser("route", help="call Gateway.Route")
    add_common(route)

    register = commands.add_parser(
        "register", help="call VendorRegistry.RegisterVendor with a business profile"
    )
    add_common(register)
    register.add_argument("--name", required=True, help="business name")
    register.add_argument("--type", required=True, help="business type, such as retail")
    register.add_argument("--description", default="", help="one or two sentences")
    register.add_argument("--location", default="", help="address or service area")
    for flag, what in (("--hours", "opening hours"), ("--offering", "product or service"),
                       ("--policy", "policy")):
        register.add_argument(flag, action="append", default=[], help=f"{what}; repeatable")

    delete = commands.add_parser("delete", help="call VendorRegistry.DeleteVendor")
    add_common(delete)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.check_stubs and args.command is None:
        parser.error("a command (send, route, register or delete) or --check-stubs is required")

    with tempfile.TemporaryDirectory(prefix="voca-stubs-") as out_dir:
        try:
            generate_stubs(args.proto_dir.resolve(), Path(out_dir))
        except StubGenerationError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_STUB_GENERATION_FAILED
        stubs = Stubs(Path(out_dir))

    if args.check_stubs:
        print(json.dumps(check_stubs(stubs.messages, stubs.services)))
        return 0

    import grpc

    try:
        if args.command in ("register", "delete"):
            response = call_registry(args, stubs)
        else:
            response = call_gateway(args, stubs.messages, stubs.services)
    except grpc.RpcError as error:
        print(json.dumps({"code": error.code().name, "details": error.details()}))
        return EXIT_RPC_ERROR
    print(json.dumps(message_to_dict(response)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
