"""Routes: a handler function plus the URLs, methods and hooks it is registered with."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from asphalt.core import Context
from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from kyoukai.interfaces import RequestContext
from kyoukai.util import InvalidReturnValue, wrap_response

HOOK_TYPES = ("pre", "post")
DEFAULT_METHODS = ("GET", "HEAD")


class _Rule(Rule):
    """werkzeug's Rule whose copies (a blueprint's ``Submount`` makes one per rule) keep ``websocket``."""

    def get_empty_kwargs(self) -> Mapping[str, Any]:
        return {**super().get_empty_kwargs(), "websocket": self.websocket}


class RouteOwner(Protocol):
    """What a route uses of the :class:`~.Blueprint` it is registered on."""

    @property
    def name(self) -> str:
        """The first half of the endpoint names of its routes."""

    def get_hooks(self, type_: str) -> list[Callable]:
        """The hooks of ``type_`` that run around its routes."""


def normalize_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """The upper-cased methods; a single string is an error (it would be split into letters)."""
    if isinstance(methods, str):
        raise TypeError(f"methods must be a list of method names, not the string {methods!r}")
    return tuple(m.upper() for m in methods)


async def call_maybe_async(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` and await the result if it is awaitable."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


class Route:
    """
    A handler wrapped for routing.

    The handler takes the request context first, then the URL parameters by name. It may be a
    plain function or a coroutine function.

    :param function: the handler.
    :param reverse_hooks: run the hooks child-first instead of parent-first.
    :param should_invoke_hooks: run blueprint and route hooks around the handler.
    :param do_argument_checking: check at finalisation that the handler accepts every URL
        parameter of its rules.
    :param endpoint: the endpoint name; defaults to ``"<blueprint name>.<function name>"``.
    :param stream_body: the handler reads the request body itself as it arrives
        (``await ctx.request.stream.read_async(...)``) instead of getting it complete.
    :param websocket: the handler serves WebSockets (``ctx.websocket``); its rules match only
        WebSocket handshakes (see :meth:`.Blueprint.websocket`).
    """

    def __init__(
        self,
        function: Callable,
        *,
        reverse_hooks: bool = False,
        should_invoke_hooks: bool = True,
        do_argument_checking: bool = True,
        endpoint: str | None = None,
        stream_body: bool = False,
        websocket: bool = False,
    ) -> None:
        self._callable = function
        self.reverse_hooks = reverse_hooks
        self.should_invoke_hooks = should_invoke_hooks
        self.do_argument_checking = do_argument_checking
        self.endpoint = endpoint
        self.stream_body = stream_body
        self.websocket = websocket
        #: ``(url, methods)`` pairs this route is registered under.
        self.routes: list[tuple[str, tuple[str, ...]]] = []
        #: The :class:`~.Blueprint` owning this route.
        self.bp: RouteOwner | None = None
        self.hooks: dict[str, list[Callable]] = {"pre": [], "post": []}

    def __repr__(self) -> str:
        return f"<Route {self.get_endpoint_name()} {self.routes}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._callable(*args, **kwargs)

    @property
    def callable(self) -> Callable:
        """The wrapped handler."""
        return self._callable

    def add_path(self, url: str, methods: Iterable[str] = DEFAULT_METHODS) -> Route:
        """Register this route under another URL and set of methods."""
        self.routes.append((url, normalize_methods(methods)))
        return self

    def get_endpoint_name(self, bp: RouteOwner | None = None) -> str:
        """The endpoint name: the explicit one, else ``"<blueprint name>.<function name>"``."""
        if self.endpoint is not None:
            return self.endpoint
        bp = bp or self.bp
        name = getattr(self._callable, "__name__", type(self._callable).__name__)
        return f"{bp.name}.{name}" if bp is not None else name

    def get_rules(self, host: str | None = None) -> list[Rule]:
        """The werkzeug rules of this route, one per registered URL."""
        endpoint = self.get_endpoint_name()
        websocket = self.websocket
        return [
            _Rule(url, methods=methods, endpoint=endpoint, host=host, websocket=websocket)
            for url, methods in self.routes
        ]

    def check_route_args(self, params: Iterable[str] | None = None) -> None:
        """
        Check that the handler can be called with a context and ``params`` by keyword.

        :raises TypeError: naming the handler and the parameter it cannot take.
        """
        if not self.do_argument_checking:
            return
        names = list(params or ())
        try:
            inspect.signature(self._callable).bind(None, **{n: None for n in names})
        except TypeError as e:
            raise TypeError(
                f"route {self.get_endpoint_name()!r} cannot be called with a context and the "
                f"URL parameters {names}: {e}"
            ) from None

    def add_hook(self, type_: str, hook: Callable) -> Callable:
        """Add a route-specific hook: ``"pre"`` (``ctx -> ctx``) or ``"post"`` (``ctx, response -> response``)."""
        if type_ not in HOOK_TYPES:
            raise ValueError(f"hook type must be one of {HOOK_TYPES}, not {type_!r}")
        self.hooks[type_].append(hook)
        return hook

    def before_request(self, func: Callable) -> Callable:
        """Decorator adding a route-specific pre-request hook."""
        return self.add_hook("pre", func)

    def after_request(self, func: Callable) -> Callable:
        """Decorator adding a route-specific post-request hook."""
        return self.add_hook("post", func)

    def get_hooks(self, type_: str) -> list[Callable]:
        """Blueprint hooks (parent first) then this route's hooks, reversed if asked."""
        hooks = list(self.bp.get_hooks(type_)) if self.bp is not None else []
        hooks.extend(self.hooks[type_])
        if self.reverse_hooks:
            hooks.reverse()
        return hooks

    async def invoke_function(
        self,
        ctx: RequestContext,
        pre_hooks: Iterable[Callable],
        post_hooks: Iterable[Callable],
        params: Mapping[str, Any] | Iterable[Any],
    ) -> Response:
        """
        Kyoukai 2.2's way to chain routes: call the handler with ``params`` (a mapping by name,
        else positionally) between the hooks given instead of the blueprint's; none run when
        ``should_invoke_hooks`` is false. :meth:`invoke` is the usual way in.
        """
        if not self.should_invoke_hooks:
            pre_hooks = post_hooks = ()
        for hook in pre_hooks:
            new_ctx = await call_maybe_async(hook, ctx)
            if new_ctx is not None:
                ctx = new_ctx
        if isinstance(params, Mapping):
            result = await call_maybe_async(self._callable, ctx, **params)
        else:
            result = await call_maybe_async(self._callable, ctx, *params)
        response_class = ctx.app.response_class if ctx.app is not None else None
        response = wrap_response(result, response_class)
        for hook in post_hooks:
            new_response = await call_maybe_async(hook, ctx, response)
            if new_response is not None:
                response = wrap_response(new_response, response_class)
        return response

    async def invoke(
        self,
        ctx: RequestContext,
        args: tuple = (),
        params: dict[str, Any] | None = None,
        *,
        status: int = 200,
    ) -> Response:
        """
        Run the pre-hooks, the handler and the post-hooks, and return the response.

        ``status`` is the status given to a bare body the handler returns.
        """
        run_hooks = self.should_invoke_hooks and self.bp is not None
        if run_hooks:
            for hook in self.get_hooks("pre"):
                new_ctx = await call_maybe_async(hook, ctx)
                if new_ctx is not None:
                    if not (isinstance(new_ctx, Context) and isinstance(new_ctx, RequestContext)):
                        raise TypeError(f"pre-request hook {hook!r} returned {new_ctx!r}, not a request context")
                    ctx = new_ctx

        result = self._callable(ctx, *args, **(params or {}))
        if inspect.isawaitable(result):
            result = await result
        response_class = ctx.app.response_class if ctx.app is not None else None
        try:
            response = wrap_response(result, response_class, status=status)
        except InvalidReturnValue as e:
            raise InvalidReturnValue(f"route {self.get_endpoint_name()!r} returned {e}") from None

        if run_hooks:
            for hook in self.get_hooks("post"):
                new_response = await call_maybe_async(hook, ctx, response)
                if new_response is not None:
                    try:
                        response = wrap_response(new_response, response_class)
                    except InvalidReturnValue as e:
                        raise InvalidReturnValue(
                            f"the after-request hook {hook!r} of route {self.get_endpoint_name()!r} returned {e}"
                        ) from None
        return response
