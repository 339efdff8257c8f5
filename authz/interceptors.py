"""gRPC server interceptors for the thread-pool server: guards every registered method needs
(`GuardInterceptor`) and go-grpc-prometheus's server metrics (`MetricsInterceptor`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import grpc


class RpcRecorder(Protocol):
    """One method's gRPC metrics (`authz.observe.metrics.RpcMetrics` fits)."""

    def handled(self, code: str, seconds: float) -> None: ...


# grpc's handler factory and the handler attribute holding the behavior, per
# (request_streaming, response_streaming).
_KINDS: dict[tuple[bool, bool], tuple[str, Callable[..., grpc.RpcMethodHandler]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}
UNDECODABLE = "Exception deserializing request!"  # what grpc itself answers, with INTERNAL


def _non_blocking(behavior: Callable[..., Any]) -> bool:
    """A behavior that answers through a callback and returns at once (grpc_health's Watch):
    it holds no thread while its stream is open, and wrappers must keep it so."""
    return bool(getattr(behavior, "experimental_non_blocking", False))


class _PerMethodInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps each registered method's handler once (`_wrap`), and hands that wrapper out for
    every call: registered handlers are fixed objects, so a call pays one dict lookup here.
    Unknown methods pass through untouched (gRPC answers UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = continuation(handler_call_details)
            if handler is None:
                return None
            # Two threads wrapping the same method at once store equal wrappers.
            wrapped = self._handlers[method] = self._wrap(handler, method)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class _Chained(_PerMethodInterceptor):
    """A run of per-method interceptors as one: each method's handler is wrapped by all of them
    once (the last innermost, as grpc's pipeline would), so a call pays one dict lookup instead
    of grpc's per-interceptor closure and two calls."""

    def __init__(self, members: Sequence[_PerMethodInterceptor]) -> None:
        super().__init__()
        self._members = tuple(members)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        for member in reversed(self._members):
            handler = member._wrap(handler, method)
        return handler


def chain(interceptors: Sequence[grpc.ServerInterceptor]) -> list[grpc.ServerInterceptor]:
    """`interceptors` in the same order and with the same effect, each run of per-method ones
    (all of ours) folded into one."""
    chained: list[grpc.ServerInterceptor] = []
    run: list[_PerMethodInterceptor] = []
    for interceptor in [*interceptors, None]:
        if isinstance(interceptor, _PerMethodInterceptor):
            run.append(interceptor)
            continue
        if run:
            chained.append(run[0] if len(run) == 1 else _Chained(run))
            run = []
        if interceptor is not None:
            chained.append(interceptor)
    return chained


class GuardInterceptor(_PerMethodInterceptor):
    """Two guards the thread-pool server needs, on every registered method:

    * Requests are decoded in the handler, not by grpc: grpcio's sync server (1.85) never
      closes the HTTP/2 stream of a request that fails to decode, so 1,024 undecodable
      messages make a connection refuse every later call. Undecodable bytes are answered as
      grpc would (INTERNAL, "Exception deserializing request!") and the stream is closed.
    * A blocking stream (reflection) holds a pool thread while it is open: at most
      `max_streams` are open at once, more are refused (RESOURCE_EXHAUSTED), so idle
      reflection clients can never take the threads that serve checks.
    """

    def __init__(self, max_streams: int) -> None:
        super().__init__()
        self._streams = threading.BoundedSemaphore(max_streams)

    def _open_stream(self, context: grpc.ServicerContext) -> None:
        if not self._streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many open streams")

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        streaming_in, streaming_out = handler.request_streaming, handler.response_streaming
        attribute, make = _KINDS[(streaming_in, streaming_out)]
        behavior: Callable[..., Any] = getattr(handler, attribute)
        decode: Callable[[bytes], Any] = handler.request_deserializer or (lambda raw: raw)

        def decoded(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                return decode(raw)
            except Exception:
                context.abort(grpc.StatusCode.INTERNAL, UNDECODABLE)
                raise  # not reached: abort raises

        def argument(request: Any, context: grpc.ServicerContext) -> Any:
            if streaming_in:
                return (decoded(raw, context) for raw in request)
            return decoded(request, context)

        run: Callable[..., Any]
        if _non_blocking(behavior):

            def run(request: Any, context: grpc.ServicerContext, send: Any = None) -> Any:
                return behavior(argument(request, context), context, send)

            run.experimental_non_blocking = True  # type: ignore[attr-defined]
        elif streaming_out:

            def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                self._open_stream(context)
                try:
                    yield from behavior(argument(request, context), context)
                finally:
                    self._streams.release()

        elif streaming_in:

            def run(request: Any, context: grpc.ServicerContext) -> Any:
                self._open_stream(context)
                try:
                    return behavior(argument(request, context), context)
                finally:
                    self._streams.release()

        else:

            def run(request: Any, context: grpc.ServicerContext) -> Any:
                return behavior(decoded(request, context), context)

        return make(run, request_deserializer=None, response_serializer=handler.response_serializer)


class MetricsInterceptor(_PerMethodInterceptor):
    """go-grpc-prometheus's server metrics for every registered method: handled by status code,
    and handling time (`grpc_server_started_total` is left out: it is `handled` plus the calls
    in flight, and counting it would cost a lock per call). Unknown methods are not counted
    (gRPC answers UNIMPLEMENTED before any handler), so the label set is as small as the
    services served.

    `metrics(grpc_type, "/pkg.Service/Method")` gives the recorder of one method; wrapped
    handlers are kept per method, so a call pays one dict lookup here, not a label lookup.
    """

    def __init__(self, metrics: Callable[[str, str], RpcRecorder]) -> None:
        super().__init__()
        self._metrics = metrics

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return _measured(handler, method, self._metrics)


def _measured(
    handler: grpc.RpcMethodHandler, method: str, metrics: Callable[[str, str], RpcRecorder]
) -> grpc.RpcMethodHandler:
    streaming_in, streaming_out = handler.request_streaming, handler.response_streaming
    grpc_type = (
        ("bidi_stream" if streaming_out else "client_stream")
        if streaming_in
        else ("server_stream" if streaming_out else "unary")
    )
    recorder = metrics(grpc_type, method)
    attribute, make = _KINDS[(streaming_in, streaming_out)]
    behavior = getattr(handler, attribute)
    if _non_blocking(behavior):
        measure = _measure_non_blocking
    else:
        measure = _measure_stream if streaming_out else _measure_unary
    return make(
        measure(behavior, recorder),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _measure_non_blocking(
    behavior: Callable[..., Any], recorder: RpcRecorder
) -> Callable[..., Any]:
    """A callback-answering `behavior` (returns at once) recorded when its RPC ends."""

    def call(request: Any, context: grpc.ServicerContext, send: Any = None) -> Any:
        started = time.perf_counter()
        context.add_callback(
            lambda: recorder.handled(_code_of(context, None), time.perf_counter() - started)
        )
        return behavior(request, context, send)

    call.experimental_non_blocking = True  # type: ignore[attr-defined]
    return call


def _measure_unary(behavior: Callable[..., Any], recorder: RpcRecorder) -> Callable[..., Any]:
    """`behavior` (returning one response) with its status code and duration recorded."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        code = "OK"
        try:
            result = behavior(request, context)
            code = _code_of(context, None)
            return result
        except BaseException as error:
            code = _code_of(context, error)
            raise
        finally:
            recorder.handled(code, time.perf_counter() - started)

    return call


def _measure_stream(behavior: Callable[..., Any], recorder: RpcRecorder) -> Callable[..., Any]:
    """`behavior` (a generator of responses) with its status code and duration recorded."""

    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        code = "OK"
        try:
            yield from behavior(request, context)
            code = _code_of(context, None)
        except BaseException as error:
            code = _code_of(context, error)
            raise
        finally:
            recorder.handled(code, time.perf_counter() - started)

    return stream


def _code_of(context: grpc.ServicerContext, error: BaseException | None) -> str:
    """The status code an RPC ended with, as a `grpc.StatusCode` name."""
    code = context.code()
    if code is None:
        # Set by neither the handler nor an abort: OK when it returned; when it raised,
        # CANCELLED for a cancelled call, else UNKNOWN (what grpc sends for an exception).
        if error is None:
            return "OK"
        return "CANCELLED" if isinstance(error, GeneratorExit) else "UNKNOWN"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return next((str(c.name) for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")


class PeerInterceptor(_PerMethodInterceptor):
    """Refuses every call, before its handler runs, from a connection whose verified client
    certificate `permitted` does not accept (authz.tls: `--tls-allowed-client`), with
    PERMISSION_DENIED; `on_refused` counts it."""

    def __init__(
        self,
        permitted: Callable[[Mapping[str, Sequence[bytes]]], bool],
        on_refused: Callable[[], None],
    ) -> None:
        super().__init__()
        self._permitted = permitted
        self._on_refused = on_refused

    def _guard(self, context: grpc.ServicerContext) -> None:
        if not self._permitted(context.auth_context()):
            self._on_refused()
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "client identity not allowed")

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        attribute, make = _KINDS[(handler.request_streaming, handler.response_streaming)]
        behavior: Callable[..., Any] = getattr(handler, attribute)
        run: Callable[..., Any]
        if _non_blocking(behavior):

            def run(request: Any, context: grpc.ServicerContext, send: Any = None) -> Any:
                self._guard(context)
                return behavior(request, context, send)

            run.experimental_non_blocking = True  # type: ignore[attr-defined]
        else:

            def run(request: Any, context: grpc.ServicerContext) -> Any:
                self._guard(context)
                return behavior(request, context)

        return make(
            run,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
