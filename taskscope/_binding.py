"""The ``wrapt`` proxies a decorated callable is made of: how it binds, and how it pickles.

Kept apart from ``_decorator`` (which decides what a call records) because these are about
Python's object model: descriptors, ``classmethod`` on each Python version, and ``pickle``.

Pickling: a decorated function must pickle as the undecorated one does, by reference (module
and qualified name), or it cannot go to a process pool, ``multiprocessing``, Ray or Celery.
wrapt's proxies refuse to pickle at all (``NotImplementedError``), so ours say how (issue 15).
"""

from __future__ import annotations

import importlib
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any

import wrapt

from . import _accel

# Python 3.13 stopped chaining classmethod descriptors: ``classmethod(decorated).__get__``
# no longer calls ``decorated.__get__``, it makes ``MethodType(decorated, cls)``, so the
# wrapper is called with ``cls`` as its first argument and ``instance`` unset (issue 14).
CLASSMETHOD_UNCHAINED = sys.version_info >= (3, 13)


class _Unbound:
    """The ``instance`` wrapt passes for a direct call of a ``PlainFunctionWrapper``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unbound>"

    def __reduce__(self) -> str:
        return "UNBOUND"


UNBOUND = _Unbound()


def by_reference(module: str, qualname: str) -> Any:
    """The object at ``module.qualname``: what a pickled decorated callable loads as."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _reference(proxy: Any, protocol: int) -> tuple[Any, ...]:
    """How to pickle ``proxy``: by reference, or pickle's own error for what has none."""
    wrapped = proxy.__wrapped__
    module = getattr(wrapped, "__module__", None)
    qualname = getattr(wrapped, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        try:
            found = by_reference(module, qualname)
        except Exception:
            found = None
        if getattr(found, "__wrapped__", None) is wrapped:
            return by_reference, (module, qualname)
    # A lambda, a closure, or a function not reachable by its name: let pickle say why, in
    # its own words, by pickling the function itself.
    pickle.dumps(wrapped, protocol)
    raise pickle.PicklingError(
        f"Can't pickle {wrapped!r}: it is not found as {module}.{qualname}; decorate a "
        "function defined at the top level of a module (or a method of such a class)."
    )


class TracedFunction(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A decorated callable: wrapt's function wrapper, picklable by reference."""

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return _reference(self, protocol)


class TracedBoundFunction(wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    """A decorated method bound to an instance (or a class): pickled as ``getattr`` on it."""

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        instance = self._self_instance
        name = getattr(self.__wrapped__, "__name__", None)
        if instance is not None and isinstance(name, str):
            return getattr, (instance, name)
        return _reference(self._self_parent, protocol)


setattr(TracedFunction, "__bound_function_wrapper__", TracedBoundFunction)  # noqa: B010


def _plain_function_wrapper_type() -> type | None:
    """A ``TracedFunction`` for a plain function, made with a fixed ``instance``.

    On every direct call of a plain function, wrapt looks up ``__self__`` on it to tell a bound
    method, which raises and discards an ``AttributeError``: about 430 of the 680 ns a wrapt
    pass-through costs. A plain function known at decoration time is never bound, so this
    wrapper is initialised (through wrapt's base class, with the binding wrapt itself would
    choose) with ``UNBOUND`` as its instance, and wrapt passes that instead of looking. Bound
    calls (methods) go through wrapt's own bound wrapper, as before. None when this wrapt does
    not take it, and the plain ``TracedFunction`` is used.
    """
    base: Any = next(
        (t for t in wrapt.FunctionWrapper.__mro__ if t.__name__ == "_FunctionWrapperBase"), None
    )
    if base is None:
        return None

    class PlainFunctionWrapper(TracedFunction):
        def __init__(self, wrapped: Any, wrapper: Any, enabled: Any = None) -> None:
            base.__init__(self, wrapped, UNBOUND, wrapper, enabled, "function", None)

    def probe(x: int) -> int:
        return x

    try:
        made = PlainFunctionWrapper(probe, lambda w, i, a, k: (i, w(*a, **k)))
        works = made(1) == (UNBOUND, 1) and made.__wrapped__ is probe
    except Exception:
        works = False
    return PlainFunctionWrapper if works else None


PlainFunctionWrapper = _plain_function_wrapper_type()


def _called_as_classmethod(first: Any, wrapped: Any) -> bool:
    """Whether ``first`` is a class on which ``wrapped`` is a classmethod (under its name)."""
    name = getattr(wrapped, "__name__", None)
    if not isinstance(first, type) or not isinstance(name, str):
        return False
    for klass in first.__mro__:
        attribute = vars(klass).get(name)
        if attribute is not None:
            if not isinstance(attribute, classmethod):
                return False
            return getattr(attribute.__func__, "__wrapped__", None) is wrapped
    return False


def classmethod_aware(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapper``, given ``cls`` as its instance when called through a ``classmethod``.

    Only on Python 3.13+, and only for functions defined in a class: the check is exact (the
    class's attribute of that name is a classmethod of this very function), so a staticmethod
    or a function that takes a class as its first argument is not mistaken for one.
    """

    def aware(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if (
            (instance is None or instance is UNBOUND)
            and args
            and _called_as_classmethod(args[0], wrapped)
        ):
            return wrapper(types.MethodType(wrapped, args[0]), args[0], args[1:], kwargs)
        return wrapper(wrapped, instance, args, kwargs)

    return aware


def defined_in_class(fn: Any) -> bool:
    """Whether ``fn``'s qualified name says it was defined in a class body."""
    qualname = getattr(fn, "__qualname__", "")
    if not isinstance(qualname, str) or "." not in qualname:
        return False
    return qualname.rsplit(".", 2)[-2] != "<locals>"


def _method_types() -> dict[type, type]:
    """The C module's method-binding subclasses of our wrapper types (``_speedups.method_type``).

    wrapt makes a bound wrapper object (parsing its arguments) at every attribute access of a
    decorated method: about 200 ns before the call starts. These subclasses bind a decorated
    function defined in a class as an ordinary bound method of a second wrapper of the same
    function (kept in ``_self_method``), whose wrapper takes its first argument as the instance.
    The bound method's ``__func__`` is a wrapt proxy of the function, so ``__name__``,
    ``__doc__``, ``__wrapped__`` and ``inspect.signature`` read as before; it pickles as
    ``getattr(instance, name)``, as ``TracedBoundFunction`` does. Empty without the C module.
    """
    compiled = _accel.compiled
    if compiled is None or PlainFunctionWrapper is None:
        return {}
    return {
        PlainFunctionWrapper: compiled.method_type(
            PlainFunctionWrapper, f"{__name__}.TracedMethod"
        ),
        TracedFunction: compiled.method_type(TracedFunction, f"{__name__}.TracedClassFunction"),
    }


_METHOD_TYPES = _method_types()


def make(
    fn: Any,
    wrapper: Callable[..., Any],
    enabled: Any,
    plain: bool,
    method_wrapper: Callable[..., Any] | None = None,
) -> Any:
    """The decorated callable: ``fn`` behind ``wrapper``, switched by ``enabled``.

    ``method_wrapper`` (the C module's wrapper for calls as ``fn(self, *args)``), for a plain
    function defined in a class: bound through ``_METHOD_TYPES`` instead of wrapt's bound wrapper.
    """
    in_class = defined_in_class(fn)
    if CLASSMETHOD_UNCHAINED and in_class and not isinstance(fn, (classmethod, staticmethod)):
        wrapper = classmethod_aware(wrapper)
        plain = False
    plain_function = PlainFunctionWrapper is not None and isinstance(fn, types.FunctionType)
    if method_wrapper is not None and in_class and plain_function and _METHOD_TYPES:
        kind: Any = PlainFunctionWrapper if plain else TracedFunction
        made = _METHOD_TYPES[kind](fn, wrapper, enabled)
        compiled: Any = _accel.compiled
        made._self_method = (
            compiled.MethodTwin(fn, method_wrapper, UNBOUND)  # no wrapt call in between
            if enabled is None
            else PlainFunctionWrapper(fn, method_wrapper, enabled)  # type: ignore[misc]
        )
        return made
    if plain and plain_function:
        return PlainFunctionWrapper(fn, wrapper, enabled)  # type: ignore[misc]
    return TracedFunction(fn, wrapper, enabled)
