"""Blueprints: the tree of route containers that the application routes through."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter, Rule, Submount

from kyoukai.route import DEFAULT_METHODS, HOOK_TYPES, Route
from kyoukai.static import DEFAULT_CACHE_CONTROL, DEFAULT_CHUNK_SIZE, StaticFiles

logger = logging.getLogger("kyoukai")

#: Map adapters kept per distinct host/scheme (bounded: hosts come from clients).
_ADAPTER_CACHE_SIZE = 256
#: Matches of rules without arguments kept per host, path and method (bounded likewise).
_MATCH_CACHE_SIZE = 1024


def _wsgi_str(value: str) -> str:
    """A WSGI (latin-1) string as the text it encodes, as werkzeug decodes it."""
    return value.encode("latin-1").decode(errors="replace")


#: The host pattern given to rules without a host when host matching is on.
ANY_HOST_ARG = "kyoukai_any_host"


class RouteGroupInstance(Protocol):
    """An instance of a :class:`~.RouteGroup`: it carries the blueprint built for it."""

    _kyoukai_blueprint: Blueprint


class Blueprint:
    """
    A container of routes, error handlers and hooks, with child blueprints.

    :param name: the name, the first half of its routes' endpoint names.
    :param parent: the parent blueprint; this blueprint is added as its child.
    :param prefix: the URL prefix of every route here, after the parents' prefixes.
    :param host_matching: match on the host as well as the path (implied by ``host``).
    :param host: the host pattern for this blueprint's routes (inherited by children).
    """

    def __init__(
        self,
        name: str,
        parent: Blueprint | None = None,
        prefix: str = "",
        *,
        host_matching: bool = False,
        host: str | None = None,
    ) -> None:
        self.name = name
        self._parent: Blueprint | None = None
        self._children: list[Blueprint] = []
        self._prefix = prefix
        self._host = host
        self._host_matching = host_matching or host is not None
        #: The routes registered on this blueprint (not its children).
        self.routes: list[Route] = []
        #: The error handlers by status code.
        self.errorhandlers: dict[int, Route] = {}
        self._request_hooks: dict[str, list[Callable]] = {"pre": [], "post": []}
        #: Whether :meth:`finalize` has built the routing map.
        self.finalized = False
        #: The :class:`werkzeug.routing.Map` built by :meth:`finalize`.
        self.map: Map | None = None
        self._endpoints: dict[str, Route] = {}
        self._adapters: dict[tuple, MapAdapter] = {}
        self._static_matches: dict[tuple, tuple[Route, Rule, Map]] = {}
        if parent is not None:
            parent.add_child(self)

    def __repr__(self) -> str:
        return f"<Blueprint {self.name!r} prefix={self.computed_prefix!r}>"

    @property
    def parent(self) -> Blueprint | None:
        """The parent blueprint, ``None`` for the root."""
        return self._parent

    @property
    def prefix(self) -> str:
        """This blueprint's own URL prefix."""
        return self._prefix

    @prefix.setter
    def prefix(self, value: str) -> None:
        self._prefix = value
        self.root.finalized = False

    @property
    def computed_prefix(self) -> str:
        """The parents' prefixes followed by this blueprint's."""
        if self._parent is not None:
            return self._parent.computed_prefix + self._prefix
        return self._prefix

    @property
    def host(self) -> str | None:
        """The host pattern of this blueprint or the nearest parent that has one."""
        if self._host is None and self._parent is not None:
            return self._parent.host
        return self._host

    @property
    def root(self) -> Blueprint:
        """The root of the tree this blueprint is in."""
        bp = self
        while bp._parent is not None:
            bp = bp._parent
        return bp

    @property
    def tree_routes(self) -> Iterator[Route]:
        """Every route of this blueprint and its children, parents first."""
        yield from self.routes
        for child in self._children:
            yield from child.tree_routes

    def traverse_tree(self) -> Iterator[Blueprint]:
        """Every descendant blueprint, children before their parent."""
        for child in self._children:
            yield from child.traverse_tree()
            yield child

    def find_by_path(self, path: str) -> Blueprint:
        """The deepest blueprint of this tree whose prefix ``path`` falls under (for 404s)."""
        best, best_len = self, len(self.computed_prefix)
        for bp in self.traverse_tree():
            prefix = bp.computed_prefix
            if len(prefix) > best_len and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
                best, best_len = bp, len(prefix)
        return best

    def add_child(self, blueprint: Blueprint) -> Blueprint:
        """Add ``blueprint`` as a child of this one."""
        if blueprint._parent is not None and blueprint._parent is not self:
            raise ValueError(f"{blueprint!r} already has a parent, {blueprint._parent!r}")
        if blueprint not in self._children:
            self._children.append(blueprint)
        blueprint._parent = self
        self.root.finalized = False
        return blueprint

    def add_route_group(self, group: RouteGroupInstance) -> Blueprint:
        """Add the blueprint of a :class:`~.RouteGroup` instance as a child."""
        self.add_child(group._kyoukai_blueprint)
        return self

    # routes

    def wrap_route(self, cbl: Callable, *args: Any, **kwargs: Any) -> Route:
        """Wrap a callable in a :class:`~.Route`."""
        return Route(cbl, *args, **kwargs)

    def add_route(
        self, route: Route, routing_url: str | None = None, methods: Iterable[str] = DEFAULT_METHODS
    ) -> Route:
        """
        Register ``route`` here, under ``routing_url`` (a werkzeug rule string) if given.

        :raises ValueError: if another route of this tree has the same endpoint name.
        """
        if routing_url is not None:
            route.add_path(routing_url, methods)
        if route in self.routes:
            return route
        endpoint = route.get_endpoint_name(self)
        other = self.root.get_route(endpoint)
        if other is not None:
            raise ValueError(
                f"endpoint {endpoint!r} is already registered on {other.bp!r} by {other!r}; "
                f"give one of them another function name or an explicit endpoint="
            )
        route.bp = self
        self.routes.append(route)
        self.root.finalized = False
        return route

    def route(self, routing_url: str, methods: Iterable[str] = DEFAULT_METHODS, **kwargs: Any) -> Callable:
        """
        Decorator registering a handler under ``routing_url`` for ``methods``.

        Keyword arguments go to :class:`~.Route`. Decorating a :class:`~.Route` again adds
        another URL to it.
        """

        def inner(func: Callable) -> Route:
            if isinstance(func, Route):
                func.add_path(routing_url, methods)
                self.root.finalized = False
                return func
            return self.add_route(self.wrap_route(func, **kwargs), routing_url, methods)

        return inner

    def websocket(self, routing_url: str, **kwargs: Any) -> Callable:
        """
        Decorator registering a WebSocket handler under ``routing_url``: it gets the
        WebSocket as ``ctx.websocket`` (a :class:`~kyoukai.websocket.WebSocket`), over HTTP/1.1
        and HTTP/2 alike. Keyword arguments go to :class:`~.Route`.
        """
        return self.route(routing_url, methods=("GET",), websocket=True, **kwargs)

    def add_static(
        self,
        prefix: str,
        directory: str | os.PathLike[str],
        *,
        endpoint: str | None = None,
        index: str | None = None,
        cache_control: str | None = DEFAULT_CACHE_CONTROL,
        allow_hidden: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Route:
        """
        Serve the files of ``directory`` under ``prefix`` (``GET`` and ``HEAD``):
        ``add_static("/static", "public")`` answers ``/static/css/a.css`` with
        ``public/css/a.css``. The options and the rules for paths are those of
        :class:`~kyoukai.static.StaticFiles`; build URLs with the parameter ``filename``.

        :param endpoint: the endpoint name; ``"<blueprint name>.static"`` by default.
        :raises ValueError: ``prefix`` does not start with ``/``, ``directory`` is not a
            directory, or the endpoint is taken.
        """
        if not prefix.startswith("/"):
            raise ValueError(f"the prefix of add_static must start with '/', not {prefix!r}")
        handler = StaticFiles(
            directory, index=index, cache_control=cache_control, allow_hidden=allow_hidden, chunk_size=chunk_size
        )
        route = self.wrap_route(handler, endpoint=endpoint or f"{self.name}.static")
        base = prefix.rstrip("/")
        route.add_path(f"{base}/<path:filename>", DEFAULT_METHODS)
        if index is not None:
            route.add_path(f"{base}/", DEFAULT_METHODS)
        return self.add_route(route)

    def get_route(self, endpoint: str) -> Route | None:
        """The route registered under ``endpoint`` anywhere in this tree, or ``None``."""
        root = self.root
        if root.finalized:
            return root._endpoints.get(endpoint)
        return next((r for r in self.tree_routes if r.get_endpoint_name() == endpoint), None)

    # error handlers

    def add_errorhandler(
        self, cbl: Callable, startcode: int, endcode: int | None = None, step: int | None = None
    ) -> Route:
        """
        Register ``cbl(ctx, exc)`` as the handler of ``startcode``, or of every code in
        ``range(startcode, endcode, step)``. Children without a handler use their parent's.
        """
        rtt = cbl if isinstance(cbl, Route) else self.wrap_route(cbl, should_invoke_hooks=False)
        codes = [startcode] if endcode is None else range(startcode, endcode, step or 1)
        for code in codes:
            self.errorhandlers[code] = rtt
        rtt.bp = self
        return rtt

    def errorhandler(self, code: int, endcode: int | None = None, step: int | None = None) -> Callable:
        """Decorator form of :meth:`add_errorhandler`."""

        def inner(cbl: Callable) -> Callable:
            self.add_errorhandler(cbl, code, endcode, step)
            return cbl

        return inner

    def get_errorhandler(self, exc: HTTPException | int) -> Route | None:
        """The handler for an exception or code, looked up here then in the parents."""
        code = exc.code if isinstance(exc, HTTPException) else exc
        if code is None:  # a bare HTTPException has no code to look up
            return None
        bp: Blueprint | None = self
        while bp is not None:
            handler = bp.errorhandlers.get(code)
            if handler is not None:
                return handler
            bp = bp._parent
        return None

    # hooks

    def add_hook(self, type_: str, hook: Callable) -> Callable:
        """Add a ``"pre"`` (``ctx -> ctx``) or ``"post"`` (``ctx, response -> response``) hook."""
        if type_ not in HOOK_TYPES:
            raise ValueError(f"hook type must be one of {HOOK_TYPES}, not {type_!r}")
        self._request_hooks[type_].append(hook)
        return hook

    def before_request(self, func: Callable) -> Callable:
        """Decorator adding a pre-request hook."""
        return self.add_hook("pre", func)

    def after_request(self, func: Callable) -> Callable:
        """Decorator adding a post-request hook."""
        return self.add_hook("post", func)

    def get_hooks(self, type_: str) -> list[Callable]:
        """The hooks of ``type_`` from the root down to this blueprint."""
        hooks = self._parent.get_hooks(type_) if self._parent is not None else []
        hooks.extend(self._request_hooks.get(type_, ()))
        return hooks

    # routing

    def _host_matching_on(self) -> bool:
        return self._host_matching or any(bp._host_matching for bp in self.traverse_tree())

    def get_submount(self, host_matching: bool = False) -> Submount:
        """The werkzeug rules of this subtree, under this blueprint's own prefix."""
        host = self.host if self.host is not None else (f"<{ANY_HOST_ARG}>" if host_matching else None)
        rules: list[Any] = [child.get_submount(host_matching) for child in self._children]
        for route in self.routes:
            rules.extend(route.get_rules(host))
        return Submount(self._prefix, rules)

    def finalize(self, **map_options: Any) -> Map:
        """
        Build the routing :class:`~werkzeug.routing.Map` of the whole tree (call on the root).

        :raises ValueError: if two routes share an endpoint name.
        :raises TypeError: if a handler cannot take the URL parameters of its rules.
        """
        if self.finalized and self.map is not None:
            return self.map
        host_matching = self._host_matching_on()
        endpoints: dict[str, Route] = {}
        for route in self.tree_routes:
            name = route.get_endpoint_name()
            other = endpoints.setdefault(name, route)
            if other is not route:
                raise ValueError(f"endpoint {name!r} is registered twice: by {other!r} and {route!r}")
        rule_map = Map([self.get_submount(host_matching)], host_matching=host_matching, **map_options)
        for rule in rule_map.iter_rules():
            route = endpoints[rule.endpoint]
            route.check_route_args(a for a in rule.arguments if a != ANY_HOST_ARG)
        logger.debug("Built the routing map: %d rules, %d endpoints.", len(list(rule_map.iter_rules())), len(endpoints))
        self.map = rule_map
        self._endpoints = endpoints
        self.finalized = True
        return rule_map

    def url_for(
        self,
        environment: dict,
        endpoint: str,
        *,
        method: str | None = None,
        _external: bool = False,
        _scheme: str | None = None,
        **kwargs: Any,
    ) -> str:
        """
        Build the URL of ``endpoint`` with ``kwargs`` as its parameters: its path, or with
        ``_external=True`` the absolute URL ``scheme://host[:port]/path``, from the scheme and
        ``Host`` of the request ``environment`` describes. ``_scheme`` (``"https"``) replaces the
        scheme and implies ``_external``. A rule on another host gives an absolute URL anyway.

        Kyoukai 2.2's documented spellings work too: ``force_external=True``, and
        ``methods=[...]`` for ``method=`` (the first of the list).
        """
        external = _external or _scheme is not None or bool(kwargs.pop("force_external", False))
        if method is None and isinstance(kwargs.get("methods"), list | tuple):
            method = next(iter(kwargs.pop("methods")), None)
        root = self.root
        rule_map = root.finalize()
        adapter = rule_map.bind_to_environ(environment)
        if rule_map.host_matching and endpoint in root._endpoints:
            # Only rules without a host of their own take the request's host as a parameter.
            if any(ANY_HOST_ARG in rule.arguments for rule in rule_map.iter_rules(endpoint)):
                kwargs.setdefault(ANY_HOST_ARG, adapter.server_name)
        return adapter.build(endpoint, values=kwargs, method=method, force_external=external, url_scheme=_scheme)

    def match(self, environment: dict) -> tuple[Route, dict[str, Any], Rule]:
        """
        Match a WSGI environment to ``(route, params, rule)``.

        :raises werkzeug.exceptions.NotFound: no rule matches.
        :raises werkzeug.exceptions.MethodNotAllowed: rules match the path but not the method.
        :raises werkzeug.routing.RequestRedirect: the URL should be redirected (slashes).
        """
        rule_map = self.finalize()
        env = environment
        key = (
            env.get("HTTP_HOST"),
            env.get("SERVER_NAME"),
            env.get("SERVER_PORT"),
            env.get("wsgi.url_scheme"),
            env.get("SCRIPT_NAME"),
            env.get("HTTP_UPGRADE"),
            env.get("HTTP_CONNECTION"),
            env.get("PATH_INFO", ""),
            env["REQUEST_METHOD"],
        )
        # A rule without arguments matches the same way every time: no converter runs (a
        # converter's to_python may do anything, so rules with arguments always go to werkzeug).
        static = self._static_matches.get(key)
        if static is not None and static[2] is rule_map:
            return static[0], {}, static[1]
        adapter_key = key[:7]
        adapters = self._adapters
        adapter = adapters.get(adapter_key)
        if adapter is None or adapter.map is not rule_map:
            # Binding parses the host and scheme: done once per distinct host, not per request.
            if len(adapters) >= _ADAPTER_CACHE_SIZE:
                adapters.clear()
            adapter = adapters[adapter_key] = rule_map.bind_to_environ(env)
        rule, matched = adapter.match(
            path_info=_wsgi_str(key[7]),
            method=key[8],
            query_args=_wsgi_str(env.get("QUERY_STRING", "")),
            return_rule=True,
        )
        route = self._endpoints[rule.endpoint]
        if not rule.arguments:
            if len(self._static_matches) >= _MATCH_CACHE_SIZE:
                self._static_matches.clear()
            self._static_matches[key] = (route, rule, rule_map)
            return route, {}, rule
        params = {name: value for name, value in matched.items() if name != ANY_HOST_ARG}
        return route, params, rule
