"""Connection kind -> its spec (what the form asks for, which parameters it takes) and adapter.

A new kind is one adapter module with a `SPEC`, added to `_MODULES`. The Add-model form,
the catalog's validation and the Sandbox's controls all read the spec.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.inference.target import AuthType, Target
from core.inference.types import Adapter
from core.params import ParamSpec, validate_params

AdapterFactory = Callable[[Target, httpx.Client | None], Adapter]


@dataclass(frozen=True)
class KindSpec:
    kind: str
    label: str
    description: str
    adapter: str  # "module:Class", imported on first use (llama.cpp is heavy)
    params: tuple[ParamSpec, ...]
    needs_url: bool = True
    url_label: str = "Endpoint URL"
    url_placeholder: str = ""
    url_help: str = ""
    needs_model: bool = True
    model_label: str = "Model name"
    model_placeholder: str = ""
    model_help: str = ""
    default_auth: AuthType = "bearer"
    auth_types: tuple[AuthType, ...] = ("none", "bearer", "api_key")
    lists_models: bool = False
    settings_defaults: dict[str, Any] = field(default_factory=dict)
    # Rules between parameters (e.g. TGI's best_of needs sampling): {field: message}.
    param_rules: Callable[[dict[str, Any]], dict[str, str]] | None = None
    # Checks of the connection's settings (e.g. JSONata expressions): {"settings.<name>": message}.
    settings_rules: Callable[[dict[str, Any]], dict[str, str]] | None = None

    def check_params(
        self, values: dict[str, Any], *, context_length: int | None = None, prefix: str = ""
    ) -> dict[str, str]:
        """Every problem with `values` for this kind: ranges first, then the kind's own rules."""
        errors = validate_params(values, self.params, context_length=context_length, prefix=prefix)
        if self.param_rules and not errors:
            errors = {prefix + k: v for k, v in self.param_rules(values).items()}
        return errors

    def make_adapter(self, target: Target, client: httpx.Client | None = None) -> Adapter:
        module_name, _, class_name = self.adapter.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        adapter: Adapter = cls(target, client)
        return adapter


# Kinds in the order the Add-model form offers them.
_MODULES = (
    "core.inference.openai_compat",
    "core.inference.tgi",
    "core.inference.custom_api",
    "core.inference.xinference",
    "core.inference.local_gguf",
)


def _load() -> dict[str, KindSpec]:
    specs: dict[str, KindSpec] = {}
    for name in _MODULES:
        spec: KindSpec = importlib.import_module(name).SPEC
        specs[spec.kind] = spec
    return specs


_SPECS: dict[str, KindSpec] | None = None


def kinds() -> dict[str, KindSpec]:
    global _SPECS
    if _SPECS is None:
        _SPECS = _load()
    return _SPECS


def spec_for(kind: str) -> KindSpec:
    try:
        return kinds()[kind]
    except KeyError:
        raise KeyError(f"Unknown connection kind '{kind}'") from None


def make_adapter(target: Target, client: httpx.Client | None = None) -> Adapter:
    return spec_for(target.kind).make_adapter(target, client)
