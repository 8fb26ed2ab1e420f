"""One registry type for everything a user can add by name: screening methods and models.

Examples:
    >>> colours = Registry[str]("colour")
    >>> _ = colours.register("red")("#f00")
    >>> colours.get("red"), colours.names()
    ('#f00', ['red'])
    >>> colours.register("red")("#e00")
    Traceback (most recent call last):
    ...
    panning.errors.UserError: a colour named 'red' is already registered; unregister it first or choose another name
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from panning.errors import UserError, UserTypeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind; a second entry under a taken name is refused."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._built_in: frozenset[str] = frozenset()

    def mark_built_in(self) -> None:
        """Protect the entries registered so far (the package's own) from :meth:`unregister`.

        Examples:
            >>> shapes = Registry("shape")
            >>> _ = shapes.register("square")(4)
            >>> shapes.mark_built_in()
            >>> shapes.unregister("square")
            Traceback (most recent call last):
            ...
            panning.errors.UserError: shape 'square' is built into panning and cannot be unregistered
        """
        self._built_in = frozenset(self._entries)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``entry`` under ``name``; returns the entry unchanged."""
        if not isinstance(name, str) or not name:
            raise UserTypeError(f"a {self.kind} name must be a non-empty str, got {name!r}")

        def add(entry: T) -> T:
            if name in self._entries:
                fix = "choose another name" if name in self._built_in else "unregister it first or choose another name"
                raise UserError(f"a {self.kind} named {name!r} is already registered; {fix}")
            self._entries[name] = entry
            return entry

        return add

    def unregister(self, name: str) -> None:
        """Remove an entry (a plug-in's or a test's clean-up)."""
        if name not in self._entries:
            raise UserError(f"no {self.kind} {name!r} is registered; registered: {', '.join(self.names())}")
        if name in self._built_in:
            raise UserError(f"{self.kind} {name!r} is built into panning and cannot be unregistered")
        del self._entries[name]

    def get(self, name: str) -> T:
        """The entry of ``name``; an unknown name is a user error listing the valid ones."""
        if not isinstance(name, str):
            raise UserTypeError(f"{self.kind} must be a str, got {type(name).__name__}")
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


__all__ = ["Registry"]
