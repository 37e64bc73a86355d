"""Generation-parameter controls drawn from the connection kind's ParamSpecs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import streamlit as st

from core.params import ParamSpec


def stop_from_text(text: str) -> list[str]:
    r"""One stop sequence per line; `\n` and `\t` typed literally mean a newline and a tab."""
    return [
        line.replace("\\n", "\n").replace("\\t", "\t") for line in text.splitlines() if line.strip()
    ]


def stop_to_text(values: Iterable[str] | None) -> str:
    return "\n".join(v.replace("\n", "\\n").replace("\t", "\\t") for v in (values or []))


def _slider_step(spec: ParamSpec) -> float:
    span = (spec.maximum or 1) - (spec.minimum or 0)
    return 0.05 if span > 1 else 0.01


def param_input(spec: ParamSpec, value: Any, key: str, *, persist: bool = False) -> Any:
    """One control; returns the value (None when left empty, meaning "server default")."""
    extra: dict[str, Any] = {"persist_state": "session"} if persist else {}
    label, help_text = (
        spec.label,
        spec.help + (f" Range: {spec.range_text()}." if spec.range_text() else ""),
    )
    if spec.type == "bool":
        return st.toggle(label, value=bool(value), key=key, help=help_text, **extra)
    if spec.type == "text_list":
        text = st.text_area(
            label, value=stop_to_text(value), key=key, help=help_text, height=80, **extra
        )
        return stop_from_text(text) or None
    bounded = spec.minimum is not None and spec.maximum is not None and spec.maximum <= 10
    if (
        spec.type == "float"
        and bounded
        and not spec.exclusive_min
        and not spec.exclusive_max
        and not spec.advanced
    ):
        start = spec.default if value is None else value
        return st.slider(
            label,
            min_value=float(spec.minimum or 0),
            max_value=float(spec.maximum or 1),
            value=float(start if start is not None else spec.minimum or 0),
            step=_slider_step(spec),
            key=key,
            help=help_text,
            **extra,
        )
    if spec.type == "int":
        return st.number_input(
            label,
            min_value=int(spec.minimum) if spec.minimum is not None else None,
            max_value=int(spec.maximum) if spec.maximum is not None else None,
            value=int(value) if value is not None else None,
            step=1,
            key=key,
            help=help_text,
            placeholder="server default",
            **extra,
        )
    return st.number_input(
        label,
        min_value=float(spec.minimum)
        if spec.minimum is not None and not spec.exclusive_min
        else None,
        max_value=float(spec.maximum)
        if spec.maximum is not None and not spec.exclusive_max
        else None,
        value=float(value) if value is not None else None,
        step=_slider_step(spec),
        format="%.2f",
        key=key,
        help=help_text,
        placeholder="server default",
        **extra,
    )


def param_panel(
    specs: Iterable[ParamSpec],
    values: Mapping[str, Any],
    key_prefix: str,
    *,
    persist: bool = False,
    advanced_label: str = "More settings",
) -> dict[str, Any]:
    """Main controls first, the rest in an expander. Returns {name: value or None}."""
    specs = list(specs)
    out: dict[str, Any] = {}
    for spec in (s for s in specs if not s.advanced):
        start = values.get(spec.name, spec.default)
        out[spec.name] = param_input(spec, start, f"{key_prefix}.{spec.name}", persist=persist)
    advanced = [s for s in specs if s.advanced]
    if advanced:
        with st.expander(advanced_label):
            for spec in advanced:
                start = values.get(spec.name, spec.default if spec.type == "bool" else None)
                out[spec.name] = param_input(
                    spec, start, f"{key_prefix}.{spec.name}", persist=persist
                )
    return out
