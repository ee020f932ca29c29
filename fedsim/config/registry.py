"""Plug-in registries: each extension point maps a config ``kind`` to its config class and factory.

A plug-in (a codec, an encryption scheme, an adversary, an attack method, a model, a dataset) is
one module that declares its pydantic config class, whose ``kind: Literal[...]`` field names the
kinds it answers to, and registers it with a factory::

    CODECS.register(MyCodecConfig, make_my_codec)

A config field typed ``Annotated[PluginConfig, CODECS.field()]`` validates by dispatching on
``kind`` to the registered class when the field is validated, so the ground-floor config module
needs no import of any plug-in. An unknown kind is the usual ``union_tag_invalid`` error listing
the registered kinds. Models holding such fields rebuild their validators on every (un)register
(:meth:`Registry.on_change`). ``fedsim.plugins`` imports the built-in plug-ins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

F = TypeVar("F")


def config_kinds(config: type[BaseModel]) -> tuple[str, ...]:
    """The kinds a config class answers to: the values of its ``kind: Literal[...]`` field."""
    field = config.model_fields.get("kind")
    if field is None or get_origin(field.annotation) is not Literal:
        raise TypeError(f"{config.__name__} needs a field kind: Literal[...]")
    return tuple(get_args(field.annotation))


class Registry(Generic[F]):
    """Kinds of one extension point (``what``, e.g. ``"codec"``), in registration order.

    Each kind maps to its config class and a factory (whose signature the extension point
    defines, e.g. ``(config, context) -> codec``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, tuple[type[BaseModel] | None, F]] = {}
        self._listeners: list[Callable[[], None]] = []

    def register(self, config: type[BaseModel] | str, factory: F) -> None:
        """Register ``config`` (every kind it declares) with ``factory``; a kind is taken once.

        ``config`` may be a bare kind name, for extension points whose settings are shared
        (``model.kind``, ``data.dataset``).
        """
        kinds = (config,) if isinstance(config, str) else config_kinds(config)
        taken = [k for k in kinds if k in self._entries]
        if taken:
            raise ValueError(f"{self.what} kind {taken[0]!r} is already registered")
        for kind in kinds:
            self._entries[kind] = (None if isinstance(config, str) else config, factory)
        self._changed()

    def unregister(self, config: type[BaseModel] | str) -> None:
        """Remove every kind ``config`` declares (tests that register a plug-in of their own)."""
        for kind in (config,) if isinstance(config, str) else config_kinds(config):
            self._entries.pop(kind, None)
        self._changed()

    def kinds(self) -> tuple[str, ...]:
        """Registered kinds, in registration order."""
        return tuple(self._entries)

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries

    def config(self, kind: str) -> type[BaseModel] | None:
        """The config class of ``kind`` (None if it was registered by name)."""
        return self._entry(kind)[0]

    def factory(self, kind: str) -> F:
        """The factory registered for ``kind``."""
        return self._entry(kind)[1]

    def _entry(self, kind: str) -> tuple[type[BaseModel] | None, F]:
        try:
            return self._entries[kind]
        except KeyError:
            raise ValueError(f"unknown {self.what} kind {kind!r}; expected one of "
                             f"{', '.join(map(repr, self._entries))}") from None

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every (un)registration (config models rebuild their schema)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def field(self) -> _Dispatch:
        """Annotation metadata: validate by dispatching on ``kind`` to the registered configs."""
        return _Dispatch(self)

    def name_field(self) -> _Names:
        """Annotation metadata for a plain string that must be a registered kind."""
        return _Names(self)


class _Dispatch:
    """``Annotated[..., registry.field()]``: a tagged union over the kinds registered now."""

    def __init__(self, registry: Registry[Any]) -> None:
        self.registry = registry

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        entries = self.registry._entries
        if not entries:
            what = self.registry.what

            def empty(value: Any) -> Any:
                raise PydanticCustomError("no_plugins", f"no {what} kinds are registered "
                                          "(import fedsim.plugins)")
            return core_schema.no_info_plain_validator_function(empty)
        choices = {kind: handler.generate_schema(cls) for kind, (cls, _) in entries.items()
                   if cls is not None}
        return core_schema.tagged_union_schema(choices, discriminator="kind")


class _Names:
    """``Annotated[str, registry.name_field()]``: a string naming a registered kind."""

    def __init__(self, registry: Registry[Any]) -> None:
        self.registry = registry

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        registry = self.registry

        def known(value: str) -> str:
            if value not in registry:
                *most, last = [repr(k) for k in registry.kinds()] or ["(none registered)"]
                expected = f"{', '.join(most)} or {last}" if most else last
                raise PydanticCustomError("literal_error", "Input should be {expected}",
                                          {"expected": expected})
            return value
        return core_schema.no_info_after_validator_function(known, handler(source))


#: Uplink codecs (fedsim/codecs/): factory ``(config, CodecContext) -> UpdateCodec``.
CODECS: Registry[Any] = Registry("codec")
#: Weight domains / encryption schemes: factory ``(config, model, input_shape, state) -> EncryptionSetup``.
ENCRYPTIONS: Registry[Any] = Registry("encryption")
#: Adversaries inside a run (fedsim/attacks/adversaries.py): factory ``config -> Adversary``.
ADVERSARIES: Registry[Any] = Registry("adversary")
#: Models (fedsim/models.py), by name: factory ``(ModelConfig, input_shape, num_classes) -> nn.Module``.
MODELS: Registry[Any] = Registry("model")
#: Datasets (fedsim/data/), by name: factory ``(DataConfig, seed) -> Dataset``.
DATASETS: Registry[Any] = Registry("dataset")
#: Gradient-inversion attacks (fedsim/attacks/), by ``attack.method``: an ``AttackMethod``.
ATTACKS: Registry[Any] = Registry("attack method")
