"""authz.interceptors.chain: our per-method interceptors folded into one grpc interceptor, in
the same order and with the same effect as grpc's own pipeline."""

from __future__ import annotations

from typing import Any

import grpc

from authz.interceptors import _PerMethodInterceptor, chain


class Tag(_PerMethodInterceptor):
    def __init__(self, name: str, seen: list[str]) -> None:
        super().__init__()
        self.name, self.seen = name, seen

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary

        def run(request: Any, context: Any) -> Any:
            self.seen.append(self.name)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(run)


class Other(grpc.ServerInterceptor):  # type: ignore[misc]
    def intercept_service(self, continuation: Any, details: Any) -> Any:
        return continuation(details)


class Details:
    method = "/pkg.Service/Method"


def handler(seen: list[str]) -> grpc.RpcMethodHandler:
    def run(request: Any, context: Any) -> Any:
        seen.append("handler")
        return request

    return grpc.unary_unary_rpc_method_handler(run)


def test_a_run_of_ours_is_one_interceptor_in_grpc_order() -> None:
    seen: list[str] = []
    other = Other()
    chained = chain([Tag("a", seen), Tag("b", seen), other, Tag("c", seen)])
    assert len(chained) == 3 and chained[1] is other and isinstance(chained[2], Tag)
    wrapped = chained[0].intercept_service(lambda _: handler(seen), Details())
    assert wrapped.unary_unary("x", None) == "x"
    assert seen == ["a", "b", "handler"]  # the first outermost, as grpc applies them
    # Wrapped once per method: the same handler object for every later call.
    assert chained[0].intercept_service(lambda _: None, Details()) is wrapped


def test_an_unknown_method_passes_through() -> None:
    chained = chain([Tag("a", []), Tag("b", [])])
    assert chained[0].intercept_service(lambda _: None, Details()) is None


def test_nothing_to_chain() -> None:
    assert chain([]) == []
    one = Tag("a", [])
    assert chain([one]) == [one]
