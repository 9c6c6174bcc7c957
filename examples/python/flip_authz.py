"""A small client for flip-authz (FLIP's authorization service) over gRPC, with grpcio only.

The messages come from flip_authz.binpb, a descriptor set that `buf build` makes from the contract
(proto/flip/authz/v1/authz.proto; `npm run generate` in the flip-authz repository refreshes it), so no
generated Python is needed and any protobuf 4.x works: 4.21 (Debian's python3-protobuf) builds classes
with MessageFactory().GetPrototype, newer releases with message_factory.GetMessageClass.

    authz = AuthzClient("localhost:50051", token=os.environ["AUTHZ_SERVICE_TOKEN"])
    authz.check_permission(user_id=sub, permission="CAN_CREATE_PROJECTS").allowed

Every RPC is a method named in snake_case taking the request's fields as keyword arguments, plus
`token=` (this call's bearer credential, e.g. the end user's access token for a write) and `timeout=`
(seconds; default 5). Errors are grpc.RpcError: .code() is a grpc.StatusCode, .details() the message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DESCRIPTOR_SET = Path(__file__).with_name("flip_authz.binpb")
SERVICE = "flip.authz.v1.AuthzService"


def _load(path: Path) -> tuple[descriptor_pool.DescriptorPool, Any]:
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool, pool.FindServiceByName(SERVICE)


def _message_class(descriptor: Any) -> type:
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class AuthzClient:
    """One channel to flip-authz; h2c unless `credentials` (grpc.ssl_channel_credentials(...)) are given."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 5.0,
        descriptor_set: Path = DESCRIPTOR_SET,
    ) -> None:
        self._channel = (
            grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
        )
        self._token = token
        self._timeout = timeout
        self.pool, service = _load(descriptor_set)
        for method in service.methods:
            request_class = _message_class(method.input_type)
            response_class = _message_class(method.output_type)
            path = f"/{SERVICE}/{method.name}"
            kind = self._channel.unary_stream if method.server_streaming else self._channel.unary_unary
            stub = kind(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            setattr(self, _snake(method.name), self._bind(stub, request_class, method.server_streaming))

    def _bind(self, stub: Any, request_class: type, streaming: bool) -> Any:
        def call(token: str | None = None, timeout: float | None = None, **fields: Any) -> Any:
            credential = token if token is not None else self._token
            metadata = (("authorization", f"Bearer {credential}"),) if credential else ()
            request = request_class(**fields)
            if streaming:
                return stub(request, metadata=metadata, timeout=timeout)
            return stub(request, metadata=metadata, timeout=timeout if timeout is not None else self._timeout)

        return call

    def message(self, full_name: str) -> type:
        """A message class of the contract, e.g. message("flip.authz.v1.CheckPermissionRequest")."""
        return _message_class(self.pool.FindMessageTypeByName(full_name))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "AuthzClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

