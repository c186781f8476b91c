"""Named registries: how a config string (``model.decoder: seanet``, ``train.discriminators: [stft]``) finds its class.

Each extensible family has one :class:`Registry`; an implementation joins it with one decorator line::

    from lib.model.discriminators import DISCRIMINATORS

    @DISCRIMINATORS.register("mine")
    class MyDiscriminator(nn.Module):
        ...

``config.validate`` takes each family's valid choices from ``Registry.names()`` and ``lib.build`` constructs modules
with ``Registry.get(name)``, so a new entry is usable from a preset as soon as its module has been imported.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator


class Registry:
    """Maps names to objects (classes or functions) of one family, e.g. ``Registry("discriminator")``."""

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Callable[[Any], Any] | Any:
        """``@REG.register("name")`` above a class or function, or ``REG.register("name", obj)``; returns it."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.family} registry: a name must be a non-empty string, got {name!r}")

        def add(target: Any) -> Any:
            if name in self._entries and self._entries[name] is not target:
                raise ValueError(f"{self.family} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = target
            return target

        return add if obj is None else add(obj)

    def get(self, name: str) -> Any:
        """The entry called ``name``; a ``KeyError`` listing the valid names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.family} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self.names())})"
