"""
Route groups: a class whose decorated methods become the routes, error handlers and hooks of
a blueprint, one blueprint per instance.

.. code-block:: python

    class Users(RouteGroup, prefix="/users"):
        def __init__(self, db):
            self.db = db

        @routegroup.route("/<int:uid>")
        async def get(self, ctx, uid):
            return self.db[uid]

    app.add_route_group(Users(db))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from kyoukai.blueprint import Blueprint
from kyoukai.route import DEFAULT_METHODS, HOOK_TYPES, normalize_methods

_MARK = "_kyoukai_rg"


def _marks(func: Callable) -> dict[str, Any]:
    marks = getattr(func, _MARK, None)
    if marks is None:
        marks = {"routes": [], "route_kwargs": {}, "errorhandlers": [], "hooks": [], "route_hooks": []}
        setattr(func, _MARK, marks)
    return marks


def route(url: str, methods: Iterable[str] = DEFAULT_METHODS, **kwargs: Any) -> Callable:
    """
    Mark a method as a route of its group; arguments as :meth:`.Blueprint.route`.

    Stacking the decorator registers more URLs. The marked function gains ``hook(type_)``,
    ``before_request`` and ``after_request`` decorators for route-specific hooks.
    """

    methods = normalize_methods(methods)

    def inner(func: Callable) -> Callable:
        marks = _marks(func)
        marks["routes"].append((url, methods))
        marks["route_kwargs"].update(kwargs)
        if not hasattr(func, "before_request"):

            def hook_(type_: str) -> Callable:
                def add(hook_func: Callable) -> Callable:
                    if type_ not in HOOK_TYPES:
                        raise ValueError(f"hook type must be one of {HOOK_TYPES}, not {type_!r}")
                    marks["route_hooks"].append((type_, hook_func))
                    return hook_func

                return add

            # The marked function gains these decorators, set through its __dict__: typed as a
            # Callable, it is not known to take attributes.
            vars(func).update(hook=hook_, before_request=hook_("pre"), after_request=hook_("post"))
        return func

    return inner


def websocket(url: str, **kwargs: Any) -> Callable:
    """Mark a method as a WebSocket route of its group; arguments as :meth:`.Blueprint.websocket`."""
    return route(url, methods=("GET",), websocket=True, **kwargs)


def errorhandler(startcode: int, endcode: int | None = None, step: int | None = None) -> Callable:
    """Mark a method as the group's error handler for a code or a range of codes."""

    def inner(func: Callable) -> Callable:
        _marks(func)["errorhandlers"].append((startcode, endcode, step))
        return func

    return inner


def hook(type_: str) -> Callable:
    """Mark a method as a ``"pre"`` or ``"post"`` hook of the group's blueprint."""
    if type_ not in HOOK_TYPES:
        raise ValueError(f"hook type must be one of {HOOK_TYPES}, not {type_!r}")

    def inner(func: Callable) -> Callable:
        _marks(func)["hooks"].append(type_)
        return func

    return inner


def before_request(func: Callable) -> Callable:
    """Mark a method as a pre-request hook of the group."""
    return hook("pre")(func)


def after_request(func: Callable) -> Callable:
    """Mark a method as a post-request hook of the group."""
    return hook("post")(func)


def get_rg_bp(group: RouteGroup) -> Blueprint:
    """The :class:`~.Blueprint` built for a route group instance."""
    return group._kyoukai_blueprint


class RouteGroupType(type):
    """Metaclass of :class:`RouteGroup`: keeps the class keyword arguments for the blueprint."""

    def __new__(mcs, name: str, bases: tuple, namespace: dict, **bp_kwargs: Any) -> RouteGroupType:
        return super().__new__(mcs, name, bases, namespace)

    def __init__(cls, name: str, bases: tuple, namespace: dict, **bp_kwargs: Any) -> None:
        super().__init__(name, bases, namespace)
        cls._bp_kwargs = bp_kwargs

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__call__(*args, **kwargs)
        instance._kyoukai_blueprint = cls._build_blueprint(instance)
        return instance

    def _build_blueprint(cls, instance: Any) -> Blueprint:
        bp = Blueprint(cls.__name__, **cls._bp_kwargs)
        for _, func in inspect.getmembers(cls, inspect.isfunction):
            marks = getattr(func, _MARK, None)
            if marks is None:
                continue
            member = func.__get__(instance)
            if marks["routes"]:
                rtt = bp.wrap_route(member, **marks["route_kwargs"])
                for url, methods in marks["routes"]:
                    rtt.add_path(url, methods)
                for type_, hook_func in marks["route_hooks"]:
                    rtt.add_hook(
                        type_, hook_func.__get__(instance) if _is_group_function(cls, hook_func) else hook_func
                    )
                bp.add_route(rtt)
            for startcode, endcode, step in marks["errorhandlers"]:
                bp.add_errorhandler(member, startcode, endcode, step)
            for type_ in marks["hooks"]:
                bp.add_hook(type_, member)
        return bp


def _is_group_function(cls: type, func: Callable) -> bool:
    """Whether ``func`` is a plain function defined in the group class (to bind it as a method)."""
    return any(vars(klass).get(getattr(func, "__name__", "")) is func for klass in cls.__mro__)


class RouteGroup(metaclass=RouteGroupType):
    """
    Base class of route groups. Keyword arguments in the class statement
    (``class Api(RouteGroup, prefix="/api")``) are passed to the group's :class:`~.Blueprint`.
    """

    #: Set on each instance by the metaclass (see :func:`get_rg_bp`).
    _kyoukai_blueprint: Blueprint
