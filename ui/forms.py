"""Form pieces shared by Manage providers and the Edit dialog: connection and model fields,
with each validation message shown under the field it is about.
"""

from __future__ import annotations

from typing import Any

import httpx
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from core.catalog import CardView, ModelDraft, ProviderDraft, ProviderView
from core.inference import prompts
from core.inference.registry import KindSpec
from core.inference.target import AuthType
from ui.params import param_panel

AUTH_LABELS: dict[str, str] = {
    "none": "No authentication",
    "bearer": "Bearer token (Authorization: Bearer …)",
    "api_key": "API key in a header of your choice",
}


class FieldErrors:
    """Placeholders drawn under fields, filled with validation messages after a submit."""

    def __init__(self) -> None:
        self._slots: dict[str, DeltaGenerator] = {}
        self._general: DeltaGenerator | None = None
        self.problems: dict[str, str] = {}  # found while drawing (e.g. unparsable headers)

    def slot(self, *fields: str) -> None:
        """Call right after drawing a field: its messages will appear here."""
        placeholder = st.empty()
        for field in fields:
            self._slots[field] = placeholder

    def general(self) -> None:
        """Where messages for fields without a slot go (call where they should appear)."""
        self._general = st.empty()

    def show(self, errors: dict[str, str]) -> None:
        grouped: dict[int, tuple[DeltaGenerator, list[str]]] = {}
        leftover: list[str] = []
        for field, message in errors.items():
            slot = self._slots.get(field) or self._slots.get(field.split(".")[0])
            if slot is None:
                leftover.append(message)
                continue
            grouped.setdefault(id(slot), (slot, []))[1].append(message)
        for slot, messages in grouped.values():
            slot.error("\n\n".join(messages), icon=":material/error:")
        if leftover:
            target = self._general or st
            target.error("\n\n".join(leftover), icon=":material/error:")


def default_connection_name(base_url: str, spec: KindSpec) -> str:
    """'api.together.xyz', '127.0.0.1:8080', 'Local file mistral.gguf'."""
    if spec.kind == "local_gguf":
        return f"Local file {base_url.rsplit('/', 1)[-1]}" if base_url.strip() else "Local file"
    try:
        url = httpx.URL(base_url.strip())
    except (httpx.InvalidURL, ValueError):
        return spec.label
    if not url.host:
        return spec.label
    return f"{url.host}:{url.port}" if url.port else url.host


def headers_from_text(text: str) -> tuple[dict[str, str], str | None]:
    """`Name: value` per line. Returns the headers and a problem, if any line is malformed."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            return headers, f"Line {number} is not 'Name: value'."
        headers[name.strip()] = value.strip()
    return headers, None


def headers_to_text(headers: dict[str, str]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in headers.items())


def tags_from_text(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def template_fields(settings: dict[str, Any], key: str, errors: FieldErrors) -> dict[str, Any]:
    """Chat template choice for completion-only kinds, with a preview of the prompt it builds."""
    names = [*prompts.BUILTIN_TEMPLATES, "custom"]
    labels = {n: t.label for n, t in prompts.BUILTIN_TEMPLATES.items()} | {
        "custom": "Custom (Jinja2)"
    }
    current = settings.get("chat_template") or "plain"
    choice = st.selectbox(
        "Chat template",
        names,
        index=names.index(current) if current in names else 0,
        format_func=labels.__getitem__,
        key=f"{key}.chat_template",
        help="How the conversation becomes one prompt for a model without a chat API.",
    )
    errors.slot("settings.chat_template")
    out: dict[str, Any] = {"chat_template": choice}
    if choice == "custom":
        out["custom_template"] = st.text_area(
            "Custom template",
            value=settings.get("custom_template", ""),
            key=f"{key}.custom_template",
            height=160,
            help="Hugging Face style: loop over `messages` (m.role, m.content); "
            "`add_generation_prompt`, `bos_token` and `eos_token` are available.",
        )
        errors.slot("settings.custom_template")
        source = out["custom_template"]
    else:
        source = prompts.BUILTIN_TEMPLATES[choice].source
    with st.expander("Preview on an example conversation"):
        problem = prompts.check_template(source)
        if problem:
            st.warning(problem)
        else:
            template = prompts.resolve(out)
            st.code(prompts.render(template, prompts.EXAMPLE_CONVERSATION), language=None)
    return out


def connection_fields(
    spec: KindSpec,
    key: str,
    errors: FieldErrors,
    existing: ProviderView | None = None,
    *,
    name_field: bool = False,
) -> ProviderDraft:
    """Endpoint, authentication and advanced connection settings.

    With `name_field`, the advanced section asks for the connection's name (optional: a
    blank name becomes one derived from the endpoint); otherwise `name` is the existing one.
    """
    base_url = st.text_input(
        spec.url_label,
        value=existing.base_url if existing else "",
        placeholder=spec.url_placeholder,
        help=spec.url_help,
        key=f"{key}.base_url",
    )
    errors.slot("base_url")
    auth_type: AuthType = spec.default_auth
    if existing and existing.auth_type in spec.auth_types:
        auth_type = existing.auth_type  # type: ignore[assignment]
    if len(spec.auth_types) > 1:
        auth_type = st.selectbox(
            "Authentication",
            spec.auth_types,
            index=spec.auth_types.index(auth_type),
            format_func=AUTH_LABELS.__getitem__,
            key=f"{key}.auth_type",
        )
        errors.slot("auth_type")
    api_key: str | None = None
    header, prefix = (
        (existing.auth_header, existing.auth_prefix) if existing else ("Authorization", "")
    )
    if auth_type != "none":
        keep = existing is not None and existing.has_key
        typed = st.text_input(
            "API key",
            type="password",
            key=f"{key}.api_key",
            placeholder=f"Leave blank to keep the stored key ({existing.masked_key})"
            if keep and existing
            else "Paste the key",
            help="Stored encrypted. Only its first and last characters are ever shown.",
        )
        errors.slot("api_key")
        api_key = typed.strip() or None
        if auth_type == "api_key":
            left, right = st.columns(2)
            header = left.text_input("Header name", value=header, key=f"{key}.auth_header")
            prefix = right.text_input(
                "Value prefix",
                value=prefix,
                key=f"{key}.auth_prefix",
                help="e.g. Bearer, Basic, Token; may be empty.",
            )
            errors.slot("auth_header", "auth_prefix")
    settings = dict(existing.settings) if existing else dict(spec.settings_defaults)
    name = existing.name if existing else ""
    if "chat_template" in spec.settings_defaults:  # completion-only kinds need one
        settings.update(template_fields(settings, key, errors))
    if spec.kind == "custom_api":
        from ui.custom_api_fields import custom_api_fields

        settings.update(custom_api_fields(key, errors, settings))
    with st.expander("Advanced connection settings"):
        if name_field:
            name = st.text_input(
                "Connection name",
                value=name,
                key=f"{key}.provider_name",
                placeholder=default_connection_name(base_url, spec),
                help="Optional. Lists this endpoint under Connections; several model cards "
                "can share one connection.",
            )
            errors.slot("provider_name")
        headers_text = st.text_area(
            "Extra headers",
            value=headers_to_text(existing.extra_headers) if existing else "",
            key=f"{key}.headers",
            placeholder="X-Team: research",
            help="One per line as Name: value. Don't put secrets here; use the API key field.",
            height=80,
        )
        extra_headers, header_problem = headers_from_text(headers_text)
        errors.slot("extra_headers")
        if header_problem:
            errors.problems["extra_headers"] = header_problem
            st.warning(header_problem)
        left, right = st.columns(2)
        connect_timeout = left.number_input(
            "Connect timeout (s)",
            min_value=0.1,
            max_value=3600.0,
            value=existing.connect_timeout if existing else None,
            placeholder="default (5)",
            key=f"{key}.connect_timeout",
        )
        read_timeout = right.number_input(
            "Read timeout (s)",
            min_value=0.1,
            max_value=3600.0,
            value=existing.read_timeout if existing else None,
            placeholder="default (60)",
            key=f"{key}.read_timeout",
            help="The longest silence allowed between two pieces of a reply.",
        )
        errors.slot("connect_timeout", "read_timeout")
    return ProviderDraft(
        name=name.strip() or default_connection_name(base_url, spec),
        kind=spec.kind,
        base_url=base_url,
        auth_type=auth_type,
        api_key=api_key,
        auth_header=header,
        auth_prefix=prefix,
        extra_headers=extra_headers,
        settings=settings,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def model_name_field(
    spec: KindSpec, key: str, errors: FieldErrors, value: str, remote_models: list[str]
) -> str:
    """The remote model name: typed, or picked from the list the server offered."""
    picked = ""
    if remote_models:
        index = remote_models.index(value) if value in remote_models else 0
        picked = st.selectbox(
            f"{spec.model_label} (from the server's list)",
            remote_models,
            index=index,
            key=f"{key}.remote_pick",
            help="The models the server listed when the connection was tested.",
        )
    typed = st.text_input(
        "Or type another model name" if remote_models else spec.model_label,
        value="" if remote_models else value,
        placeholder=spec.model_placeholder,
        help=spec.model_help,
        key=f"{key}.remote_model",
    )
    errors.slot("remote_model")
    return typed.strip() or str(picked or "")


def model_fields(
    spec: KindSpec,
    key: str,
    errors: FieldErrors,
    existing: CardView | None = None,
    *,
    remote_model: str = "",
) -> ModelDraft:
    """Display name and the card's details and default parameters (remote name set by caller)."""
    display_name = st.text_input(
        "Display name",
        value=existing.display_name if existing else "",
        placeholder="How this model is called in Plugboard",
        key=f"{key}.display_name",
    )
    errors.slot("display_name")
    with st.expander("Card details and default settings"):
        description = st.text_area(
            "Description",
            value=existing.description if existing else "",
            key=f"{key}.description",
            height=68,
        )
        tags = st.text_input(
            "Tags",
            value=", ".join(existing.tags) if existing else "",
            placeholder="e.g. fast, internal, 7b",
            help="Comma-separated; used to filter the Models page.",
            key=f"{key}.tags",
        )
        errors.slot("tags")
        context_length = st.number_input(
            "Context length (tokens)",
            min_value=1,
            max_value=10_000_000,
            value=existing.context_length if existing else None,
            placeholder="unknown: no trimming",
            help="Longer conversations are trimmed to fit, keeping the system prompt and the "
            "newest turns.",
            key=f"{key}.context_length",
        )
        errors.slot("context_length")
        st.caption("Defaults for new chats (each chat can change them):")
        defaults = param_panel(
            spec.params,
            existing.default_params if existing else {},
            f"{key}.params",
            advanced_label="More defaults",
        )
        errors.slot("params")
    return ModelDraft(
        display_name=display_name,
        remote_model=remote_model,
        description=description,
        tags=tags_from_text(tags),
        context_length=int(context_length) if context_length else None,
        default_params={k: v for k, v in defaults.items() if v is not None},
        enabled=existing.enabled if existing else True,
    )


def connection_report(report: Any) -> None:
    """A ConnectionReport as a checklist, the failing layer in red."""
    for step in report.steps:
        if step.ok:
            st.markdown(f":green[:material/check_circle:] **{step.layer}** — {step.message}")
        else:
            st.markdown(f":red[:material/cancel:] **{step.layer}** — {step.message}")
    if report.ok:
        st.success("The connection works.", icon=":material/check_circle:")
    else:
        st.error(f"The connection failed at: {report.summary}", icon=":material/error:")
