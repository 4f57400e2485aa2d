"""``taskscope.instrument_ray()``: Ray tasks and actor calls join the caller's run.

Ray runs a remote function or actor method in a worker process, on this machine or another
node. After ``instrument_ray()``, a call made while a run is current carries that run and task
(``inject``) as one extra keyword argument; on the worker the call runs inside ``attach`` as a
task of its own (named after the function or ``Class.method``, kind ``"ray"``), so it is a child
of the caller's task in the same run, and whatever it calls, nested remote calls included, nests
under it. The worker exports through its own exporters, configured by the ``TASKSCOPE_*`` and
``AGENTOS_*`` variables the driver gives it (``runtime_env={"env_vars": {...}}``), and flushes
after each call, so what a call recorded is delivered when ``ray.get`` returns.

The extra argument is declared in the signature Ray checks arguments against, the way Ray's own
tracing adds ``_ray_trace_ctx``: Ray wraps a remote function when it is first called and an
actor class when it is decorated, and ``instrument_ray`` hooks those two points. So it applies
to remote functions first called after it and to actor classes decorated after it; calls of
others run as before, unrecorded. Ray is imported only when ``instrument_ray()`` is called.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._config import flush
from ._decorator import task
from ._propagation import RUN_ID_HEADER, attach, inject

CARRIER = "_taskscope_carrier"  # the keyword argument that carries the caller's run and task
FLUSH_TIMEOUT = 10.0  # how long a worker waits for its records to go before it returns anyway
_installed = False
_install_lock = threading.Lock()
_traced: weakref.WeakKeyDictionary[Any, Callable[..., Any]] = weakref.WeakKeyDictionary()


def instrument_ray() -> None:
    """Record Ray remote calls made inside a run as tasks of that run, on whichever worker.

    Call it on the driver before the first ``.remote()`` call and before ``@ray.remote``
    classes are defined. Calling it again does nothing.
    """
    global _installed
    try:
        from ray import actor, remote_function
    except ImportError:
        raise ImportError(
            "taskscope.instrument_ray() needs Ray: pip install 'taskscope[ray]'."
        ) from None
    with _install_lock:
        if _installed:
            return
        _hook_functions(remote_function)
        _hook_actors(actor)
        _installed = True


def _carrier() -> dict[str, str] | None:
    carrier = dict(inject())
    return carrier if RUN_ID_HEADER in carrier else None


def _with_carrier_parameter(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` with a keyword-only ``_taskscope_carrier=None`` (before ``**kwargs``)."""
    parameters = list(signature.parameters.values())
    if any(p.name == CARRIER for p in parameters):
        return signature
    extra = inspect.Parameter(CARRIER, inspect.Parameter.KEYWORD_ONLY, default=None)
    at = len(parameters)
    if parameters and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD:
        at -= 1
    return signature.replace(parameters=[*parameters[:at], extra, *parameters[at:]])


def _accepts_carrier(parameters: Any) -> bool:
    return parameters is not None and any(getattr(p, "name", None) == CARRIER for p in parameters)


# -- on the worker ---------------------------------------------------------------------------


def _recorded(function: Callable[..., Any], name: str, method: bool) -> Callable[..., Any]:
    """``function`` decorated as a task, once per worker process."""
    traced = _traced.get(function)
    if traced is None:
        ignore = ("self", "_ray_trace_ctx") if method else ("_ray_trace_ctx",)
        traced = _traced[function] = task(name, kind="ray", ignore=ignore)(function)
    return traced


def _call(
    carrier: dict[str, str],
    name: str,
    function: Callable[..., Any],
    method: bool,
    args: Any,
    kwargs: Any,
) -> Any:
    instrument_ray()  # remote calls this one makes carry its context on
    traced = _recorded(function, name, method)
    try:
        with attach(carrier):
            return traced(*args, **kwargs)
    finally:
        flush(FLUSH_TIMEOUT)


async def _acall(
    carrier: dict[str, str],
    name: str,
    function: Callable[..., Any],
    method: bool,
    args: Any,
    kwargs: Any,
) -> Any:
    instrument_ray()
    traced = _recorded(function, name, method)
    try:
        with attach(carrier):
            return await traced(*args, **kwargs)
    finally:
        await asyncio.to_thread(flush, FLUSH_TIMEOUT)


def _carrying(function: Callable[..., Any], name: str, method: bool) -> Callable[..., Any]:
    """A stand-in for ``function`` that takes the carrier and records the call under it."""
    signature = _with_carrier_parameter(inspect.signature(function))
    if method:

        def run_method(
            self: Any, *args: Any, _taskscope_carrier: dict[str, str] | None = None, **kwargs: Any
        ) -> Any:
            if _taskscope_carrier is None:
                return function(self, *args, **kwargs)
            return _call(_taskscope_carrier, name, function, True, (self, *args), kwargs)

        async def arun_method(
            self: Any, *args: Any, _taskscope_carrier: dict[str, str] | None = None, **kwargs: Any
        ) -> Any:
            if _taskscope_carrier is None:
                return await function(self, *args, **kwargs)
            return await _acall(_taskscope_carrier, name, function, True, (self, *args), kwargs)

        carrying: Any = arun_method if inspect.iscoroutinefunction(function) else run_method
    else:

        def run_function(
            *args: Any, _taskscope_carrier: dict[str, str] | None = None, **kwargs: Any
        ) -> Any:
            if _taskscope_carrier is None:
                return function(*args, **kwargs)
            return _call(_taskscope_carrier, name, function, False, args, kwargs)

        async def arun_function(
            *args: Any, _taskscope_carrier: dict[str, str] | None = None, **kwargs: Any
        ) -> Any:
            if _taskscope_carrier is None:
                return await function(*args, **kwargs)
            return await _acall(_taskscope_carrier, name, function, False, args, kwargs)

        carrying = arun_function if inspect.iscoroutinefunction(function) else run_function
    # Named as the function (Ray shows and registers it by these), without ``__wrapped__``:
    # Ray reads an actor method's signature through ``inspect.unwrap``.
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(carrying, attribute, getattr(function, attribute, None))
    carrying.__signature__ = signature
    carrying.__taskscope_ray__ = True
    made: Callable[..., Any] = carrying
    return made


# -- on the driver (and on workers, for nested calls) ----------------------------------------


def _hook_functions(remote_function: Any) -> None:
    original_wrap = remote_function._inject_tracing_into_function

    def wrap_function(function: Any) -> Any:
        wrapped = original_wrap(function)
        if getattr(wrapped, "__taskscope_ray__", False):
            return wrapped
        return _carrying(wrapped, getattr(function, "__qualname__", "remote"), method=False)

    remote_function._inject_tracing_into_function = wrap_function
    remote_class = remote_function.RemoteFunction
    original_remote = remote_class._remote

    def _remote(self: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        carrier = _carrier()
        if carrier is not None and not self._is_cross_language:
            _prepare(self, remote_function)
            if _accepts_carrier(self._function_signature):
                kwargs = {**(kwargs or {}), CARRIER: carrier}
        return original_remote(self, args=args, kwargs=kwargs, **options)

    remote_class._remote = _remote


def _signature_extractor() -> Callable[..., Any]:
    """Ray's ``extract_signature``, from where this Ray version keeps it."""
    for module in ("ray._common.signature", "ray._private.signature"):
        try:
            found: Callable[..., Any] = importlib.import_module(module).extract_signature
        except (ImportError, AttributeError):
            continue
        return found
    raise ImportError("taskscope.instrument_ray() does not know this Ray version's layout.")


def _prepare(remote: Any, remote_function: Any) -> None:
    """Wrap a remote function before its first export, as Ray's ``_remote`` would."""
    if remote._function_signature is not None:
        return
    extract_signature = _signature_extractor()
    with remote._inject_lock:
        if remote._function_signature is None:
            remote._function = remote_function._inject_tracing_into_function(remote._function)
            remote._function_signature = extract_signature(remote._function)


def _hook_actors(actor: Any) -> None:
    original_wrap = actor._inject_tracing_into_class

    def wrap_class(cls: Any) -> Any:
        result = original_wrap(cls)
        if not vars(cls).get("__taskscope_ray__", False):
            _wrap_methods(cls)
        return result

    actor._inject_tracing_into_class = wrap_class
    class_class = actor.ActorClass
    original_create = class_class._remote

    def _create(self: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # A class decorated before instrument_ray(): its methods get the carrier parameter
        # before the class is first sent to the cluster (never after: the workers would then
        # hold methods without it).
        meta = self.__ray_metadata__
        cls = meta.modified_class
        if (
            cls is not None
            and meta.last_export_cluster_and_job is None
            and not vars(cls).get("__taskscope_ray__", False)
        ):
            _resign(meta, _wrap_methods(cls))
        return original_create(self, args=args, kwargs=kwargs, **options)

    class_class._remote = _create
    method_class = actor.ActorMethod
    original_remote = method_class._remote

    def _remote(self: Any, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        carrier = _carrier()
        if carrier is not None and _accepts_carrier(self._signature):
            kwargs = {**(kwargs or {}), CARRIER: carrier}
        return original_remote(self, args, kwargs, *rest, **options)

    method_class._remote = _remote


def _resign(meta: Any, names: list[str]) -> None:
    """Ray's record of the methods' signatures, made again for the methods just wrapped."""
    extract_signature = _signature_extractor()
    cls = meta.modified_class
    for name in names:
        method = vars(cls)[name]
        meta.method_meta.methods[name] = method
        meta.method_meta.signatures[name] = extract_signature(method, ignore_first=True)


def _wrap_methods(cls: type) -> list[str]:
    """Give each plain method of an actor class the carrier parameter (in place)."""
    wrapped: list[str] = []
    cls.__taskscope_ray__ = True  # type: ignore[attr-defined]
    for name, member in list(vars(cls).items()) + _inherited(cls):
        if name.startswith("__") or not inspect.isfunction(member):
            continue
        if getattr(member, "__taskscope_ray__", False):
            continue
        if inspect.isgeneratorfunction(member) or inspect.isasyncgenfunction(member):
            continue  # streamed actor methods keep Ray's own handling
        qualname = getattr(inspect.unwrap(member), "__qualname__", name)
        carrying = _carrying(member, qualname, method=True)
        # Ray's tracing would otherwise wrap it again when the worker loads the class.
        carrying.__ray_tracing_wrapped__ = True  # type: ignore[attr-defined]
        setattr(cls, name, carrying)
        wrapped.append(name)
    return wrapped


def _inherited(cls: type) -> list[tuple[str, Any]]:
    """Plain methods the actor class inherits, not overridden in it."""
    own = set(vars(cls))
    found: dict[str, Any] = {}
    for base in cls.__mro__[1:]:
        if base is object:
            continue
        for name, member in vars(base).items():
            if name not in own and name not in found and inspect.isfunction(member):
                found[name] = member
    return list(found.items())
