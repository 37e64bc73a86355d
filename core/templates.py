"""Model templates: make a model card by filling in a few fields instead of a whole connection.

In the manner of Scale GenAI's model templates (protocols.md §4.3), a template is

* fixed scaffolding shared by every model made from it (`fixed`): base URL or URL pattern,
  auth type / header / prefix, extra headers, the kind's settings (JSONata expressions, chat
  template…), display-name pattern, description, tags, context length, timeouts;
* a JSON Schema (draft 2020-12) of the *creation parameters* a person fills in
  (`creation_schema`, e.g. an API key and a model name), from which the form is drawn;
* a JSON Schema of the *request parameters* a model made from it accepts (`request_schema`):
  which of the kind's generation parameters are offered, with narrower ranges and defaults
  allowed (the defaults become the card's defaults). Empty: everything the kind accepts.

Creation parameters reach the card in two ways (a creation value wins over the fixed setting):

* by name — `api_key` → the connection's API key (the one place a secret may go; it is
  stored encrypted and never in a template), `model` → remote model name, `base_url` →
  endpoint URL (a file path for local GGUF), `display_name`, `description`,
  `context_length` → the card's fields;
* by placeholder — `{name}` in a fixed string is replaced by that parameter's value (a string
  that is only a placeholder keeps the value's type). `{host}` is also the host of the final
  endpoint URL, for display names, unless a creation parameter is called `host`. Unknown
  `{…}` in kind settings are left alone (JSONata uses braces).

Built-in templates are code (`builtins()`), listed alongside a person's own (`ModelTemplate`
rows). `create_model_from_template()` checks the values against the schema, builds the
drafts and goes through the catalog's own validation, so every normal rule still applies.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

import httpx
from jsonschema import (  # type: ignore[import-untyped]
    Draft202012Validator,
    FormatChecker,
)
from jsonschema.exceptions import (  # type: ignore[import-untyped]
    SchemaError,
    ValidationError,
)
from sqlalchemy import func
from sqlmodel import Session, col, select

from core import catalog
from core.catalog import (
    CardView,
    ModelDraft,
    NotFoundInCatalog,
    ProviderDraft,
    ValidationFailed,
)
from core.inference import prompts
from core.inference.custom_api import PRESETS
from core.inference.local_gguf import BUNDLED
from core.inference.registry import KindSpec, kinds
from core.inference.target import AUTH_TYPES
from core.params import ParamSpec
from core.tables import ModelCard, ModelTemplate, Provider, utcnow
from core.workspace import Workspace

DRAFT = "https://json-schema.org/draft/2020-12/schema"
EXPORT_KEY = "plugboard_template"  # marks an exported file, with its format version
EXPORT_VERSION = 1

# Creation parameters with a meaning of their own: name -> the draft field they fill.
MAPPED: dict[str, str] = {
    "api_key": "api_key",
    "model": "remote_model",
    "base_url": "base_url",
    "display_name": "display_name",
    "description": "description",
    "context_length": "context_length",
}
_MAPPED_TYPES = {"context_length": "integer"}  # the others are strings

FIXED_TEXT = (
    "base_url",
    "auth_header",
    "auth_prefix",
    "remote_model",
    "display_name",
    "description",
)
FIXED_KEYS = (
    *FIXED_TEXT,
    "auth_type",
    "extra_headers",
    "settings",
    "tags",
    "context_length",
    "connect_timeout",
    "read_timeout",
)
FIELD_TYPES = ("string", "integer", "number", "boolean")
TOP_LEVEL = (
    EXPORT_KEY,
    "name",
    "description",
    "kind",
    "fixed",
    "creation_schema",
    "request_schema",
)

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Header names that carry credentials, and text that looks like a key or token.
_SENSITIVE_HEADER = re.compile(r"auth|token|secret|key|password|cookie|session", re.I)
# (Vendor key prefixes, up to two segments as in sk-proj-…, then a long unbroken run;
# words joined by _ such as token_count_per_request are not keys.)
_SECRET_TEXT = re.compile(
    r"\b(?:sk|pk|rk|hf|gsk|xai|ghp|gho|glpat|tgp|nvapi)[-_](?:[A-Za-z0-9]+[-_]){0,2}[A-Za-z0-9]{16,}"
    r"|\bdapi[0-9a-f]{32}"  # Databricks personal access tokens
    r"|\bBearer\s+[A-Za-z0-9._~+/\-]{12,}=*"
    r"|\bBasic\s+[A-Za-z0-9+/]{12,}=*",
    re.I,
)


# --- definitions and views --------------------------------------------------------------------


@dataclass
class TemplateDefinition:
    """What a person writes (and what is exported): everything but ids and dates."""

    name: str
    kind: str
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    creation_schema: dict[str, Any] = field(default_factory=dict)
    request_schema: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "fixed": self.fixed,
            "creation_schema": self.creation_schema,
            "request_schema": self.request_schema,
        }


@dataclass(frozen=True)
class TemplateView:
    name: str
    kind: str
    description: str
    fixed: dict[str, Any]
    creation_schema: dict[str, Any]
    request_schema: dict[str, Any]
    id: int | None = None  # a person's template; None for a built-in
    builtin: str = ""  # the built-in's key ("openai"…); empty for a person's template
    card_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_builtin(self) -> bool:
        return bool(self.builtin)

    @property
    def ref(self) -> int | str:
        """What create_model_from_template() and get_template() take."""
        return self.builtin or self.id or 0

    @property
    def available(self) -> bool:
        """False when this Plugboard does not have the template's connection kind."""
        return self.kind in kinds()

    @property
    def kind_label(self) -> str:
        spec = kinds().get(self.kind)
        return spec.label if spec else self.kind

    def definition(self) -> TemplateDefinition:
        return TemplateDefinition(
            name=self.name,
            kind=self.kind,
            description=self.description,
            fixed=json.loads(json.dumps(self.fixed)),
            creation_schema=json.loads(json.dumps(self.creation_schema)),
            request_schema=json.loads(json.dumps(self.request_schema)),
        )


# --- a schema as form fields ------------------------------------------------------------------

Widget = Literal["text", "password", "integer", "number", "boolean", "select", "unsupported"]


@dataclass(frozen=True)
class FieldSpec:
    """One creation parameter as a form field: what to draw, independent of Streamlit."""

    name: str
    label: str
    widget: Widget
    required: bool = False
    default: Any = None
    help: str = ""
    placeholder: str = ""
    options: tuple[Any, ...] = ()  # select
    minimum: float | None = None  # inclusive bounds a number widget can enforce
    maximum: float | None = None
    max_length: int | None = None
    problem: str = ""  # unsupported: why

    @property
    def secret(self) -> bool:
        return self.widget == "password"


def properties(schema: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    props = (schema or {}).get("properties")
    if not isinstance(props, dict):
        return {}
    return {k: v for k, v in props.items() if isinstance(v, dict)}


def required(schema: Mapping[str, Any] | None) -> list[str]:
    names = (schema or {}).get("required")
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _humanise(name: str) -> str:
    words = name.replace("_", " ").strip()
    words = re.sub(r"\b(api|url|id|uid|llm)\b", lambda m: m.group(1).upper(), words, flags=re.I)
    return words[:1].upper() + words[1:]


def label_for(name: str, prop: Mapping[str, Any]) -> str:
    title = prop.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    return {"api_key": "API key", "base_url": "Base URL", "model": "Model"}.get(
        name, _humanise(name)
    )


def is_secret(name: str, prop: Mapping[str, Any]) -> bool:
    return name == "api_key" or prop.get("format") == "password" or prop.get("writeOnly") is True


def _field_type(prop: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The one JSON type of a property and whether null is allowed too."""
    kind = prop.get("type")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        return (others[0] if len(others) == 1 else None), "null" in kind
    if kind is None and isinstance(prop.get("enum"), list):
        values = prop["enum"]
        if values and all(isinstance(v, str) for v in values):
            return "string", False
    return (kind if isinstance(kind, str) else None), False


def unsupported_reason(name: str, prop: Mapping[str, Any]) -> str:
    """Why a property cannot be a form field; empty when it can."""
    label = label_for(name, prop)
    for word in ("$ref", "oneOf", "anyOf", "allOf", "not", "if"):
        if word in prop:
            return f"“{label}” uses {word}, which template forms do not support."
    kind, _ = _field_type(prop)
    raw = prop.get("type")
    if kind in FIELD_TYPES:
        return ""
    if raw == "object" or (isinstance(raw, list) and "object" in raw):
        return (
            f"“{label}” is an object: template forms have text, whole numbers, numbers, "
            "on/off and choices only (no nested fields)."
        )
    if raw == "array" or (isinstance(raw, list) and "array" in raw):
        return f"“{label}” is a list: template forms have single values only."
    if raw is None:
        return f"“{label}” has no type: give it one of {', '.join(FIELD_TYPES)}."
    return f"“{label}” has type {raw!r}: use one of {', '.join(FIELD_TYPES)}."


def _bounds(prop: Mapping[str, Any], integer: bool) -> tuple[float | None, float | None]:
    def num(key: str) -> float | None:
        value = prop.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None

    low, high = num("minimum"), num("maximum")
    ex_low, ex_high = num("exclusiveMinimum"), num("exclusiveMaximum")
    if integer:  # an exclusive bound on whole numbers is the next whole number
        if ex_low is not None:
            low = max(low if low is not None else -math.inf, math.floor(ex_low) + 1)
        if ex_high is not None:
            high = min(high if high is not None else math.inf, math.ceil(ex_high) - 1)
    return low, high


def describe_fields(schema: Mapping[str, Any] | None) -> list[FieldSpec]:
    """Each property of an object schema as a form field, in the schema's order."""
    needed = set(required(schema))
    fields: list[FieldSpec] = []
    for name, prop in properties(schema).items():
        label = label_for(name, prop)
        description = prop.get("description")
        help_text = description.strip() if isinstance(description, str) else ""
        examples = prop.get("examples")
        placeholder = (
            f"e.g. {examples[0]}"
            if isinstance(examples, list) and examples and not is_secret(name, prop)
            else ""
        )
        common: dict[str, Any] = {
            "name": name,
            "label": label,
            "required": name in needed,
            "default": None if is_secret(name, prop) else prop.get("default"),
            "help": help_text,
            "placeholder": placeholder,
        }
        problem = unsupported_reason(name, prop)
        if problem:
            fields.append(FieldSpec(widget="unsupported", problem=problem, **common))
            continue
        kind, _ = _field_type(prop)
        enum = prop.get("enum")
        if isinstance(enum, list) and enum:
            fields.append(FieldSpec(widget="select", options=tuple(enum), **common))
        elif kind == "boolean":
            fields.append(FieldSpec(widget="boolean", **common))
        elif kind in ("integer", "number"):
            low, high = _bounds(prop, kind == "integer")
            fields.append(
                FieldSpec(
                    widget="integer" if kind == "integer" else "number",
                    minimum=low,
                    maximum=high,
                    **common,
                )
            )
        else:
            length = prop.get("maxLength")
            fields.append(
                FieldSpec(
                    widget="password" if is_secret(name, prop) else "text",
                    max_length=length if isinstance(length, int) else None,
                    **common,
                )
            )
    return fields


# --- checking values against a schema, in plain words -----------------------------------------

_FORMATS = FormatChecker()


@_FORMATS.checks("uri", raises=ValueError)  # type: ignore[untyped-decorator]
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    problem = catalog.check_url(value)
    if problem:
        raise ValueError(problem)
    return True


def _validator(schema: Mapping[str, Any]) -> Any:
    return Draft202012Validator(schema, format_checker=_FORMATS)


_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "on or off",
    "object": "an object",
    "array": "a list",
    "null": "empty",
}


def _num(value: Any) -> str:
    return (
        f"{value:g}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else str(value)
    )


def plain_message(error: ValidationError, schema: Mapping[str, Any]) -> tuple[str, str]:
    """(field, sentence) for one jsonschema error, the field being the top-level property."""
    path = [str(p) for p in error.absolute_path]
    kind = error.validator
    if kind == "additionalProperties" and not path:
        extra = sorted(set(error.instance) - set(properties(schema)))
        name = extra[0] if extra else ""
        return name, f"'{name}' is not a parameter of this template."
    name = path[0] if path else ""
    prop = properties(schema).get(name, {})
    label = label_for(name, prop) if name else "The value"
    value = error.instance
    value_text = _num(value) if not isinstance(value, str) else repr(value)
    if kind == "type":
        expected = error.validator_value
        wanted = (
            " or ".join(str(_TYPE_WORDS.get(t, t)) for t in expected)
            if isinstance(expected, list)
            else str(_TYPE_WORDS.get(expected, expected))
        )
        return name, f"{label} must be {wanted}."
    if kind == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        return name, f"{label} must be one of: {options} (got {value_text})."
    if kind == "const":
        return name, f"{label} must be {error.validator_value!r}."
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": "≥", "maximum": "≤", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        return (
            name,
            f"{label} must be {sign[kind]} {_num(error.validator_value)} (got {value_text}).",
        )
    if kind == "multipleOf":
        return name, f"{label} must be a multiple of {_num(error.validator_value)}."
    if kind == "minLength":
        if error.validator_value <= 1:
            return name, f"{label} cannot be empty."
        return name, f"{label} needs at least {error.validator_value} characters."
    if kind == "maxLength":
        return name, f"{label} can have at most {error.validator_value} characters."
    if kind == "pattern":
        hint = prop.get("description") or f"the pattern {error.validator_value}"
        return name, f"{label} does not have the expected form ({hint})."
    if kind == "format":
        cause = str(error.cause) if error.cause else ""
        if error.validator_value == "uri":
            return name, f"{label}: {cause or 'enter a full http(s) address.'}"
        return name, f"{label} is not a valid {error.validator_value}."
    return name, f"{label}: {error.message}"


# When one value breaks several rules, the most basic one is said.
_PRIORITY = {"type": 0, "required": 0, "minLength": 1, "enum": 1, "pattern": 3, "format": 3}


def check_values(schema: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, str]:
    """Every problem with `values`, as {property: sentence} (the first problem per property)."""
    errors: dict[str, str] = {}
    for name in required(schema):  # said here: jsonschema's own error names one in its text
        if name not in values:
            errors[name] = f"{label_for(name, properties(schema).get(name, {}))} is required."
    found = _validator(schema).iter_errors(dict(values))
    for error in sorted(found, key=lambda e: (list(e.path), _PRIORITY.get(e.validator, 2))):
        if error.validator == "required" and not error.path:
            continue
        name, message = plain_message(error, schema)
        errors.setdefault(name or "values", message)
    return errors


def prepare_values(
    schema: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Form values made ready: blanks dropped, text trimmed, defaults applied, whole-number
    floats made ints; then checked. Returns (values, {property: problem})."""
    props = properties(schema)
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            continue
        clean[name] = value
    for name, prop in props.items():
        if name not in clean and "default" in prop and not is_secret(name, prop):
            clean[name] = prop["default"]
    for name, prop in props.items():
        value = clean.get(name)
        kind, _ = _field_type(prop)
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            clean[name] = int(value)
    return clean, check_values(schema, clean)


# --- building the drafts ----------------------------------------------------------------------


@dataclass
class Built:
    provider: ProviderDraft
    model: ModelDraft
    # catalog field -> the creation parameter it came from (to show messages under it)
    sources: dict[str, str] = field(default_factory=dict)


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def fill(
    value: Any,
    values: Mapping[str, Any],
    known: Iterable[str],
    used: list[str] | None = None,
    *,
    trim_slash: bool = False,
) -> Any:
    """`value` with `{name}` placeholders of known names replaced, through dicts and lists."""
    names = set(known)
    used = used if used is not None else []
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole and whole.group(1) in names and not trim_slash:
            used.append(whole.group(1))
            found = values.get(whole.group(1))
            return "" if found is None else found

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                return match.group(0)
            used.append(name)
            text = _text_of(values.get(name))
            return text.rstrip("/") if trim_slash else text

        return _PLACEHOLDER.sub(one, value)
    if isinstance(value, dict):
        return {k: fill(v, values, names, used) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values, names, used) for v in value]
    return value


def _host(url: str) -> str:
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError):
        return ""
    if not parsed.host:
        return ""
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def request_defaults(template: TemplateView | TemplateDefinition) -> dict[str, Any]:
    return {
        name: prop["default"]
        for name, prop in properties(template.request_schema).items()
        if "default" in prop
    }


def build_drafts(template: TemplateView, values: Mapping[str, Any]) -> Built:
    """The connection and card a template makes with these (prepared, valid) values."""
    props = properties(template.creation_schema)
    known = [n for n, p in props.items() if not is_secret(n, p)]
    fixed = template.fixed
    sources: dict[str, str] = {}

    def pick(
        target: str, *, trim_slash: bool = False, extra: Mapping[str, Any] | None = None
    ) -> Any:
        """A creation value by its mapped name, else the fixed setting with placeholders."""
        extra = extra or {}
        for name, mapped in MAPPED.items():
            if mapped == target and name in props and values.get(name) not in (None, ""):
                sources[target] = name
                return values[name]
        if target in fixed:
            used: list[str] = []
            merged = {**extra, **values}
            result = fill(fixed[target], merged, [*known, *extra], used, trim_slash=trim_slash)
            if used:
                sources[target] = next((u for u in used if u in props), used[0])
            return result
        return None

    base_url = _text_of(pick("base_url", trim_slash=True)).strip()
    derived = {"host": _host(base_url)} if "host" not in props else {}
    remote = _text_of(pick("remote_model", extra=derived)).strip()
    display = _text_of(pick("display_name", extra=derived)).strip()
    if not display:
        display = remote or template.name
    api_key = values.get("api_key") if "api_key" in props else None
    auth_type = fixed.get("auth_type") or ("bearer" if "api_key" in props else "none")
    if auth_type != "none" and not api_key and "api_key" not in required(template.creation_schema):
        auth_type = "none"  # an optional key left empty: a server without authentication
    if api_key:
        sources["api_key"] = "api_key"
    context = pick("context_length", extra=derived)
    timeouts = {k: fixed.get(k) for k in ("connect_timeout", "read_timeout")}
    provider = ProviderDraft(
        name=display,
        kind=template.kind,
        base_url=base_url,
        auth_type=auth_type,
        api_key=api_key if isinstance(api_key, str) else None,
        auth_header=_text_of(fill(fixed.get("auth_header", "Authorization"), values, known)),
        auth_prefix=_text_of(fill(fixed.get("auth_prefix", ""), values, known)),
        extra_headers={
            str(k): _text_of(v)
            for k, v in fill(fixed.get("extra_headers") or {}, values, known).items()
        },
        settings=dict(fill(fixed.get("settings") or {}, values, known)),
        connect_timeout=timeouts["connect_timeout"],
        read_timeout=timeouts["read_timeout"],
    )
    model = ModelDraft(
        display_name=display,
        remote_model=remote,
        description=_text_of(pick("description", extra=derived)).strip(),
        tags=[str(t) for t in fill(fixed.get("tags") or [], values, known)],
        context_length=None if context in (None, "") else context,  # the catalog checks it
        default_params=request_defaults(template),
        template_id=template.id,
        template_name=template.name,
    )
    return Built(provider, model, sources)


def _free(name: str, taken: Iterable[str]) -> str:
    lower = {t.lower() for t in taken}
    candidate, n = name, 2
    while candidate.lower() in lower:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def draft_for(
    ws: Workspace, ref: int | str, values: Mapping[str, Any]
) -> tuple[TemplateView, Built]:
    """The drafts a template would make (for Test connection and Create). Raises
    ValidationFailed with {property: message} when the values do not fit the schema."""
    template = get_template(ws, ref)
    if not template.available:
        raise ValidationFailed(
            {
                "template": f"The template “{template.name}” needs the '{template.kind}' "
                "connection kind, which this Plugboard does not have."
            }
        )
    clean, errors = prepare_values(template.creation_schema, values)
    if errors:
        raise ValidationFailed(errors)
    built = build_drafts(template, clean)
    with ws.session() as session:
        providers = session.exec(select(Provider.name)).all()
        cards = session.exec(select(ModelCard.display_name)).all()
    built.provider.name = _free(built.provider.name, providers)
    if built.sources.get("display_name") != "display_name":  # not typed: made unique
        built.model.display_name = _free(built.model.display_name, cards)
    return template, built


def _remap(errors: Mapping[str, str], built: Built) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, message in errors.items():
        name = built.sources.get(key, key)
        out[name] = f"{out[name]} {message}" if name in out else message
    return out


def create_model_from_template(
    ws: Workspace, template_id_or_name: int | str, values: Mapping[str, Any]
) -> CardView:
    """A new connection and card from a template: a person's (by id or name) or a built-in
    (by key, e.g. "openai", or name), with the creation values a person filled in.

    Raises ValidationFailed with messages keyed by creation parameter where one is
    responsible, else by the catalog's own field names; NotFoundInCatalog for a missing
    template.
    """
    _, built = draft_for(ws, template_id_or_name, values)
    try:
        return catalog.add_custom_model(ws, built.provider, built.model)
    except ValidationFailed as exc:
        raise ValidationFailed(_remap(exc.errors, built)) from None


# --- request parameters -----------------------------------------------------------------------

_PARAM_TYPES = {"float": "number", "int": "integer", "bool": "boolean", "text_list": "array"}


def param_schema(spec: ParamSpec) -> dict[str, Any]:
    """A kind's parameter as a JSON Schema property (no default: the server's applies)."""
    out: dict[str, Any] = {"type": _PARAM_TYPES[spec.type], "title": spec.label}
    if spec.help:
        out["description"] = spec.help
    if spec.minimum is not None:
        out["exclusiveMinimum" if spec.exclusive_min else "minimum"] = spec.minimum
    if spec.maximum is not None:
        out["exclusiveMaximum" if spec.exclusive_max else "maximum"] = spec.maximum
    if spec.type == "text_list":
        out["items"] = {"type": "string", "minLength": 1}
        if spec.max_items is not None:
            out["maxItems"] = spec.max_items
    return out


def request_params(template: TemplateView | TemplateDefinition) -> tuple[ParamSpec, ...]:
    """The kind's parameters a model made from the template offers, narrowed by its schema."""
    spec = kinds().get(template.kind)
    if spec is None:
        return ()
    props = properties(template.request_schema)
    if not props:
        return spec.params
    out: list[ParamSpec] = []
    for param in spec.params:
        prop = props.get(param.name)
        if prop is None:
            continue
        low, high, ex_low, ex_high = _range(prop)
        changes: dict[str, Any] = {}
        if low is not None:
            changes.update(minimum=low, exclusive_min=ex_low)
        if high is not None:
            changes.update(maximum=high, exclusive_max=ex_high)
        if "default" in prop:
            changes["default"] = prop["default"]
        if isinstance(prop.get("title"), str):
            changes["label"] = prop["title"]
        if isinstance(prop.get("description"), str):
            changes["help"] = prop["description"]
        if isinstance(prop.get("maxItems"), int):
            changes["max_items"] = prop["maxItems"]
        out.append(replace(param, **changes))
    return tuple(out)


def check_request(
    template: TemplateView | TemplateDefinition, values: Mapping[str, Any]
) -> dict[str, str]:
    """Request parameters checked against the template's request schema ({} when fine)."""
    if not properties(template.request_schema):
        return {}
    given = {k: v for k, v in values.items() if v is not None}
    return check_values(template.request_schema, given)


def template_of(ws: Workspace, card: CardView) -> TemplateView | None:
    """The template a card was made from, while it exists (a person's by id, a built-in by
    name: a deleted template of one's own must not be confused with a namesake)."""
    if card.template_id is not None:
        try:
            return get_template(ws, card.template_id)
        except NotFoundInCatalog:
            return None
    if card.template_name:
        for template in builtins().values():
            if template.name == card.template_name:
                return template
    return None


def card_params(ws: Workspace, card: CardView) -> tuple[ParamSpec, ...]:
    """What the Sandbox offers for a card: its template's request parameters, else its kind's."""
    template = template_of(ws, card)
    return request_params(template) if template else card.spec.params


def _range(prop: Mapping[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low is exclusive, high is exclusive); the tighter of the two forms wins."""

    def num(key: str) -> float | None:
        value = prop.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value

    low, ex_low = num("minimum"), False
    strict_low = num("exclusiveMinimum")
    if strict_low is not None and (low is None or strict_low >= low):
        low, ex_low = strict_low, True
    high, ex_high = num("maximum"), False
    strict_high = num("exclusiveMaximum")
    if strict_high is not None and (high is None or strict_high <= high):
        high, ex_high = strict_high, True
    return low, high, ex_low, ex_high


# --- checking a template ----------------------------------------------------------------------


def _placeholders(value: Any) -> list[str]:
    """Every {name} in the strings of `value` (dicts and lists included)."""
    if isinstance(value, str):
        return _PLACEHOLDER.findall(value)
    if isinstance(value, dict):
        return [n for v in value.values() for n in _placeholders(v)]
    if isinstance(value, list):
        return [n for v in value for n in _placeholders(v)]
    return []


def _strings(value: Any, where: str) -> Iterable[tuple[str, str]]:
    """(where, text) for every string inside `value`."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}.{index}")


def _secret_problems(definition: TemplateDefinition) -> dict[str, str]:
    errors: dict[str, str] = {}
    headers = definition.fixed.get("extra_headers")
    if isinstance(headers, dict):
        for name, value in headers.items():
            literal = _PLACEHOLDER.sub("", value) if isinstance(value, str) else ""
            if _SENSITIVE_HEADER.search(str(name)) and literal.strip():
                errors["fixed.extra_headers"] = (
                    f"The header '{name}' would keep a credential in the template. Templates "
                    "never hold secrets: use auth_type (the key is asked for when a model is "
                    "created, and stored encrypted)."
                )
    sources = (
        ("fixed", definition.fixed),
        ("creation_schema", definition.creation_schema),
        ("request_schema", definition.request_schema),
    )
    for root, value in sources:
        for where, text in _strings(value, root):
            if _SECRET_TEXT.search(text):
                errors.setdefault(
                    where,
                    "This looks like an API key or token. Templates are shared as files and "
                    "never hold secrets: remove it (a key is asked for when a model is created).",
                )
    return errors


def _default_problem(name: str, prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    wrapper = {"type": "object", "properties": {name: prop}}
    problems = check_values(wrapper, {name: prop["default"]})
    return f"The default does not fit: {problems[name]}" if name in problems else ""


def _object_schema_problem(schema: Any, where: str) -> str:
    """What is wrong with a schema as a whole (not its properties); empty when nothing."""
    if not isinstance(schema, dict):
        return 'The schema must be a JSON object, as in {"type": "object", "properties": {…}}.'
    declared = schema.get("$schema")
    if declared is not None and str(declared).rstrip("#") != DRAFT:
        return f"Only JSON Schema draft 2020-12 is supported ($schema: {DRAFT}), not {declared!r}."
    if schema.get("type", "object") != "object":
        return 'The schema\'s type must be "object": a set of named parameters.'
    if "properties" in schema and not isinstance(schema["properties"], dict):
        return "properties must be an object of named parameters."
    for name in required(schema):
        if name not in properties(schema):
            return f"'{name}' is listed as required but is not one of the properties."
    return ""


def _json_schema_problem(schema: dict[str, Any]) -> str:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        at = " → ".join(str(p) for p in exc.absolute_path)
        return f"Not a valid JSON Schema{' at ' + at if at else ''}: {exc.message}."
    return ""


def _creation_problems(schema: Any) -> dict[str, str]:
    where = "creation_schema"
    problem = _object_schema_problem(schema, where)
    if problem:
        return {where: problem}
    errors: dict[str, str] = {}
    for name, prop in properties(schema).items():
        key = f"{where}.{name}"
        label = label_for(name, prop)
        if not _PROPERTY_NAME.match(name):
            errors[key] = (
                f"'{name}': parameter names use letters, digits and _ only, so that "
                "{name} placeholders work."
            )
            continue
        problem = unsupported_reason(name, prop)
        if problem:
            errors[key] = problem
            continue
        kind, _ = _field_type(prop)
        if is_secret(name, prop) and name != "api_key":
            errors[key] = (
                f"“{label}” is marked as a secret. Only the parameter named api_key may hold "
                "one: it becomes the connection's key, stored encrypted."
            )
        elif name == "api_key" and any(k in prop for k in ("default", "examples", "enum", "const")):
            errors[key] = (
                "An API key cannot have a default, examples or choices: templates never hold "
                "secrets."
            )
        elif name in MAPPED and kind != _MAPPED_TYPES.get(name, "string"):
            wanted = _TYPE_WORDS[_MAPPED_TYPES.get(name, "string")]
            errors[key] = f"“{label}” fills the card's {MAPPED[name]}, so it must be {wanted}."
        else:
            problem = _default_problem(name, prop)
            if problem:
                errors[key] = problem
    if not errors:
        problem = _json_schema_problem(schema)
        if problem:
            errors[where] = problem
    return errors


def _wider(
    bound: float | None, exclusive: bool, kind: float | None, kind_exclusive: bool, *, below: bool
) -> bool:
    """True when a template's bound lets through values the kind's own bound does not."""
    if bound is None or kind is None:
        return False
    if bound == kind:
        return kind_exclusive and not exclusive
    return bound < kind if below else bound > kind


def _request_problems(schema: Any, spec: KindSpec | None) -> dict[str, str]:
    where = "request_schema"
    if isinstance(schema, dict) and not schema:
        return {}  # everything the kind accepts
    problem = _object_schema_problem(schema, where) or _json_schema_problem(schema)
    if problem:
        return {where: problem}
    if spec is None:
        return {}
    by_name = {p.name: p for p in spec.params}
    errors: dict[str, str] = {}
    for name, prop in properties(schema).items():
        key = f"{where}.{name}"
        param = by_name.get(name)
        if param is None:
            errors[key] = (
                f"'{name}' is not a parameter of {spec.label} connections; they accept: "
                f"{', '.join(by_name)}."
            )
            continue
        wanted = _PARAM_TYPES[param.type]
        given = prop.get("type", wanted)
        if given != wanted:
            errors[key] = f"{param.label} is {_TYPE_WORDS[wanted]} for this kind, not {given!r}."
            continue
        low, high, ex_low, ex_high = _range(prop)
        if _wider(low, ex_low, param.minimum, param.exclusive_min, below=True) or _wider(
            high, ex_high, param.maximum, param.exclusive_max, below=False
        ):
            errors[key] = (
                f"{param.label} can only be narrowed: the kind's own range is {param.range_text()}."
            )
        elif low is not None and high is not None and low > high:
            errors[key] = f"{param.label}: the minimum is above the maximum."
        elif "default" in prop:
            problem = param.check(prop["default"]) or _default_problem(name, prop)
            if problem:
                errors[key] = problem
    return errors


def _fixed_problems(
    fixed: Any, creation: dict[str, Any], spec: KindSpec | None, kind: str
) -> dict[str, str]:
    if not isinstance(fixed, dict):
        return {"fixed": "The fixed settings must be a JSON object."}
    errors: dict[str, str] = {}
    unknown = sorted(set(fixed) - set(FIXED_KEYS))
    if unknown:
        errors["fixed"] = (
            f"Unknown fixed setting(s): {', '.join(unknown)}. A template can fix: "
            f"{', '.join(FIXED_KEYS)}."
        )
    props = properties(creation)
    plain = {n for n, p in props.items() if not is_secret(n, p)}
    for key in FIXED_TEXT:
        if key in fixed and not isinstance(fixed[key], str):
            errors[f"fixed.{key}"] = f"{key} must be text."
    auth = fixed.get("auth_type")
    if auth is not None:
        allowed = spec.auth_types if spec else AUTH_TYPES
        if auth not in allowed:
            errors["fixed.auth_type"] = (
                f"auth_type must be one of: {', '.join(allowed)} (got {auth!r})."
            )
        elif auth != "none" and "api_key" not in props:
            errors["fixed.auth_type"] = (
                f"auth_type {auth!r} needs a creation parameter named api_key, for the key."
            )
        elif auth == "none" and "api_key" in props:
            errors["fixed.auth_type"] = "The template asks for an API key but auth_type is none."
    headers = fixed.get("extra_headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        errors["fixed.extra_headers"] = 'extra_headers is an object of texts: {"X-Team": "ml"}.'
    if not isinstance(fixed.get("settings", {}), dict):
        errors["fixed.settings"] = "settings must be a JSON object (the kind's settings)."
    tags = fixed.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        errors["fixed.tags"] = "tags is a list of texts."
    context = fixed.get("context_length")
    whole_placeholder = isinstance(context, str) and _PLACEHOLDER.fullmatch(context)
    if (
        context is not None
        and not whole_placeholder
        and (isinstance(context, bool) or not isinstance(context, int) or context < 1)
    ):
        errors["fixed.context_length"] = "context_length is a whole number of tokens, 1 or more."
    for key in ("connect_timeout", "read_timeout"):
        value = fixed.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600
        ):
            errors[f"fixed.{key}"] = "A timeout is a number of seconds between 0 and 3600."
    # Placeholders: known names only (kind settings may keep other braces: JSONata).
    for key, value in fixed.items():
        if key not in FIXED_KEYS:
            continue
        names = _placeholders(value)
        if "api_key" in names:
            errors[f"fixed.{key}"] = (
                "{api_key} cannot be written into a setting: the key goes only to the "
                "connection's API key, stored encrypted."
            )
            continue
        if key == "settings":
            continue
        extra = set() if key == "base_url" or "host" in props else {"host"}
        strange = [n for n in names if n not in plain and n not in extra]
        if strange:
            errors[f"fixed.{key}"] = (
                f"{{{strange[0]}}} is not a creation parameter of this template"
                + (f" (it has: {', '.join(sorted(plain))})." if plain else ".")
            )
    if "base_url" not in fixed and "base_url" not in props:
        errors.setdefault(
            "fixed.base_url",
            "Give the endpoint: a fixed base_url (placeholders allowed) or a creation "
            "parameter named base_url.",
        )
    if spec and spec.needs_model and "remote_model" not in fixed and "model" not in props:
        errors.setdefault(
            "fixed.remote_model",
            f"{spec.label} connections need a model name: add a creation parameter named "
            "model, or a fixed remote_model.",
        )
    settings = fixed.get("settings")
    if isinstance(settings, dict):
        template = settings.get("chat_template")
        if (
            isinstance(template, str)
            and not _PLACEHOLDER.fullmatch(template)
            and template != "custom"
            and template not in prompts.BUILTIN_TEMPLATES
        ):
            errors["fixed.settings.chat_template"] = (
                f"Unknown chat template {template!r}; use one of "
                f"{', '.join(prompts.BUILTIN_TEMPLATES)} or custom."
            )
        if spec and spec.settings_rules:
            concrete = {
                k: v
                for k, v in settings.items()
                if not (isinstance(v, str) and _PLACEHOLDER.fullmatch(v))
            }
            for key, message in spec.settings_rules(concrete).items():
                errors.setdefault(f"fixed.{key}", message)
    used = set(_placeholders(fixed))
    for name in props:
        if name not in MAPPED and name not in used:
            errors.setdefault(
                f"creation_schema.{name}",
                f"'{name}' is not used: name it one of {', '.join(MAPPED)}, or write "
                f"{{{name}}} into a fixed setting.",
            )
    return errors


def validate_definition(
    definition: TemplateDefinition,
    session: Session | None = None,
    *,
    template_id: int | None = None,
    builtin: bool = False,
) -> dict[str, str]:
    """Every problem with a template, keyed "name", "kind", "fixed.<key>",
    "creation_schema[.<param>]", "request_schema[.<param>]"; empty when it is usable."""
    errors: dict[str, str] = {}
    name = definition.name.strip() if isinstance(definition.name, str) else ""
    if not name:
        errors["name"] = "Give the template a name."
    elif len(name) > 200:
        errors["name"] = "Keep the name under 200 characters."
    elif not builtin:
        clash = next(
            (
                b.name
                for key, b in builtins().items()
                if name.lower() in (key.lower(), b.name.lower())
            ),
            None,
        )
        if clash:
            errors["name"] = f"A built-in template is called “{clash}”: pick another name."
        elif session is not None:
            found = session.exec(
                select(ModelTemplate.id).where(func.lower(ModelTemplate.name) == name.lower())
            ).first()
            if found is not None and found != template_id:
                errors["name"] = f"A template named “{name}” already exists."
    spec = kinds().get(definition.kind)
    if spec is None and not builtin:
        known = ", ".join(f"{k} ({s.label})" for k, s in kinds().items())
        errors["kind"] = f"Unknown connection kind {definition.kind!r}. Plugboard knows: {known}."
    if not isinstance(definition.description, str):
        errors["description"] = "The description must be text."
    errors.update(_creation_problems(definition.creation_schema))
    errors.update(_request_problems(definition.request_schema, spec))
    if "creation_schema" not in errors:
        fixed = _fixed_problems(definition.fixed, definition.creation_schema, spec, definition.kind)
        for key, message in fixed.items():
            errors.setdefault(key, message)
    for key, message in _secret_problems(definition).items():
        errors.setdefault(key, message)
    return errors


# --- built-in templates -----------------------------------------------------------------------

_API_KEY: dict[str, Any] = {
    "type": "string",
    "title": "API key",
    "format": "password",
    "description": "Stored encrypted; only its first and last characters are ever shown.",
}
_DISPLAY_NAME: dict[str, Any] = {
    "type": "string",
    "title": "Display name",
    "maxLength": 200,
    "description": "How this model is called in Plugboard. Leave empty for a name made from "
    "the model.",
}
_CHAT_TEMPLATE: dict[str, Any] = {
    "type": "string",
    "title": "Chat template",
    "enum": list(prompts.BUILTIN_TEMPLATES),
    "description": "How the conversation becomes one prompt for the model: "
    + "; ".join(f"{k} = {t.label}" for k, t in prompts.BUILTIN_TEMPLATES.items())
    + ".",
}


def _url(default: str, title: str = "Base URL", description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "title": title, "format": "uri"}
    if default:
        out["default"] = default
    if description:
        out["description"] = description
    return out


def _offer(kind: str, names: Iterable[str] | None = None, **narrow: Any) -> dict[str, Any]:
    """A request schema offering some of a kind's parameters (all when `names` is None)."""
    spec = kinds().get(kind)
    if spec is None:
        return {}
    wanted = set(names) if names is not None else {p.name for p in spec.params}
    props = {
        p.name: {**param_schema(p), **narrow.get(p.name, {})}
        for p in spec.params
        if p.name in wanted
    }
    return {"type": "object", "properties": props, "additionalProperties": False}


def _creation(req: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": DRAFT, "type": "object", "required": req, "properties": props}


def _builtin_definitions() -> dict[str, TemplateDefinition]:
    databricks = PRESETS["databricks"]
    return {
        "openai": TemplateDefinition(
            name="OpenAI",
            kind="openai_compat",
            description="OpenAI's Chat Completions API: your API key and a model name.",
            fixed={"auth_type": "bearer", "tags": ["openai"]},
            creation_schema=_creation(
                ["api_key", "model"],
                api_key={
                    **_API_KEY,
                    "description": "Your OpenAI key (sk-…). " + _API_KEY["description"],
                },
                model={
                    "type": "string",
                    "title": "Model",
                    "default": "gpt-4o-mini",
                    "examples": ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"],
                    "minLength": 1,
                },
                display_name=_DISPLAY_NAME,
                base_url=_url(
                    "https://api.openai.com/v1",
                    "API base URL",
                    "Change only for a proxy or another OpenAI-compatible server.",
                ),
            ),
            request_schema=_offer("openai_compat"),
        ),
        "together": TemplateDefinition(
            name="Together AI",
            kind="openai_compat",
            description="Open models hosted by Together AI (OpenAI-compatible API).",
            fixed={
                "auth_type": "bearer",
                "display_name": "{model} (Together)",
                "tags": ["together"],
            },
            creation_schema=_creation(
                ["api_key", "model"],
                api_key=_API_KEY,
                model={
                    "type": "string",
                    "title": "Model",
                    "default": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                    "examples": ["mistralai/Mistral-7B-Instruct-v0.3"],
                    "minLength": 1,
                },
                display_name=_DISPLAY_NAME,
                base_url=_url("https://api.together.xyz/v1", "API base URL"),
            ),
            request_schema=_offer("openai_compat"),
        ),
        "databricks": TemplateDefinition(
            name="Databricks serving endpoint",
            kind="custom_api",
            description="A Databricks model serving endpoint "
            "(…/serving-endpoints/<name>/invocations), through the Custom API kind's "
            "Databricks preset.",
            fixed={
                "base_url": "{workspace_url}/serving-endpoints/{endpoint}/invocations",
                "auth_type": "bearer",
                "remote_model": "{endpoint}",
                "display_name": "{endpoint} (Databricks)",
                "settings": {
                    "preset": "databricks",
                    "request_expression": databricks.request_expression,
                    "response_expression": databricks.response_expression,
                    "response_type": databricks.response_type,
                    "batch_size": 1,
                    "multi_turn": True,
                },
                "tags": ["databricks"],
            },
            creation_schema=_creation(
                ["workspace_url", "endpoint", "api_key"],
                workspace_url=_url(
                    "",
                    "Workspace URL",
                    "The address of your Databricks workspace, e.g. "
                    "https://adb-1234567890123456.7.azuredatabricks.net",
                ),
                endpoint={
                    "type": "string",
                    "title": "Serving endpoint name",
                    "pattern": "^[A-Za-z0-9_-]+$",
                    "description": "letters, digits, - and _ only, as on the Serving page",
                    "examples": ["databricks-dbrx-instruct"],
                },
                api_key={**_API_KEY, "title": "Access token"},
                display_name=_DISPLAY_NAME,
            ),
            request_schema=_offer(
                "custom_api", ["temperature", "max_tokens"], max_tokens={"default": 512}
            ),
        ),
        "hf_tgi": TemplateDefinition(
            name="Hugging Face Inference Endpoint / TGI",
            kind="tgi",
            description="A Hugging Face Inference Endpoint or any Text Generation Inference "
            "server (its own /generate API).",
            fixed={
                "auth_type": "bearer",
                "display_name": "TGI at {host}",
                "settings": {"chat_template": "{chat_template}"},
                "tags": ["tgi"],
            },
            creation_schema=_creation(
                ["base_url", "chat_template"],
                base_url=_url(
                    "",
                    "Endpoint URL",
                    "e.g. https://xyz.us-east-1.aws.endpoints.huggingface.cloud or "
                    "http://localhost:8080",
                ),
                api_key={
                    **_API_KEY,
                    "title": "Hugging Face token",
                    "description": "Leave empty for a server without authentication.",
                },
                chat_template={**_CHAT_TEMPLATE, "default": "plain"},
                model={"type": "string", "title": "Model name (optional)"},
                display_name=_DISPLAY_NAME,
            ),
            request_schema={},  # everything TGI accepts
        ),
        "datacrunch": TemplateDefinition(
            name="DataCrunch",
            kind="tgi",
            description="DataCrunch's serverless inference (TGI API); the model name is required.",
            fixed={
                "auth_type": "bearer",
                "display_name": "{model} (DataCrunch)",
                "settings": {"chat_template": "{chat_template}"},
                "tags": ["datacrunch"],
            },
            creation_schema=_creation(
                ["api_key", "model", "chat_template"],
                api_key=_API_KEY,
                model={
                    "type": "string",
                    "title": "Model",
                    "minLength": 1,
                    "examples": ["llama-2-13b-chat", "mixtral-8x7b"],
                },
                chat_template={**_CHAT_TEMPLATE, "default": "llama2"},
                display_name=_DISPLAY_NAME,
                base_url=_url("https://inference.datacrunch.io/v1/completions", "API base URL"),
            ),
            request_schema=_offer(
                "tgi",
                [
                    "temperature",
                    "max_tokens",
                    "top_k",
                    "top_p",
                    "repetition_penalty",
                    "stop",
                    "seed",
                ],
            ),
        ),
        "vllm": TemplateDefinition(
            name="vLLM",
            kind="openai_compat",
            description="A vLLM server's OpenAI-compatible API (vllm serve <model>).",
            fixed={"auth_type": "bearer", "display_name": "{model} (vLLM)", "tags": ["vllm"]},
            creation_schema=_creation(
                ["base_url", "model"],
                base_url=_url("http://localhost:8000/v1", "Server URL"),
                model={
                    "type": "string",
                    "title": "Model",
                    "minLength": 1,
                    "description": "The name vLLM serves, as in vllm serve <model>.",
                    "examples": ["meta-llama/Llama-3.1-8B-Instruct"],
                },
                api_key={
                    **_API_KEY,
                    "description": "Only if the server was started with --api-key.",
                },
                context_length={
                    "type": "integer",
                    "title": "Context length",
                    "minimum": 1,
                    "maximum": 10_000_000,
                    "description": "The server's --max-model-len, if you know it.",
                },
                display_name=_DISPLAY_NAME,
            ),
            request_schema=_offer("openai_compat"),
        ),
        "ollama": TemplateDefinition(
            name="Ollama",
            kind="openai_compat",
            description="A model pulled into Ollama on this machine, through its OpenAI route "
            "(no key needed).",
            fixed={"auth_type": "none", "display_name": "{model} (Ollama)", "tags": ["ollama"]},
            creation_schema=_creation(
                ["model"],
                model={
                    "type": "string",
                    "title": "Model",
                    "default": "llama3.2",
                    "minLength": 1,
                    "description": "As in ollama pull <model>.",
                },
                display_name=_DISPLAY_NAME,
                base_url=_url("http://localhost:11434/v1", "Ollama URL"),
            ),
            request_schema=_offer("openai_compat"),
        ),
        "xinference": TemplateDefinition(
            name="Xinference",
            kind="xinference",
            description="A model launched in Xorbits Inference (Xinference).",
            fixed={
                "auth_type": "bearer",
                "display_name": "{model} (Xinference)",
                "settings": {"chat_template": "{chat_template}"},
                "tags": ["xinference"],
            },
            creation_schema=_creation(
                ["base_url", "model"],
                base_url=_url("http://localhost:9997", "Xinference URL"),
                model={
                    "type": "string",
                    "title": "Model UID",
                    "minLength": 1,
                    "description": "The UID of a launched model (xinference list).",
                },
                api_key={
                    **_API_KEY,
                    "description": "Only if the cluster has authentication on.",
                },
                chat_template={
                    **_CHAT_TEMPLATE,
                    "default": "plain",
                    "description": "For generate-only models (chat models use their own): "
                    + _CHAT_TEMPLATE["description"],
                },
                display_name=_DISPLAY_NAME,
            ),
            request_schema={},  # everything the kind accepts
        ),
        "local_gguf": TemplateDefinition(
            name="Local GGUF file",
            kind="local_gguf",
            description="A .gguf model file on this machine, run by llama.cpp.",
            fixed={
                "base_url": "{model_file}",
                "auth_type": "none",
                "settings": {"chat_template": "{chat_template}"},
                "tags": ["local"],
            },
            creation_schema=_creation(
                ["model_file", "display_name", "chat_template"],
                model_file={
                    "type": "string",
                    "title": "Model file (.gguf)",
                    "default": BUNDLED,
                    "description": "The full path of a .gguf file on the machine running "
                    f"Plugboard; {BUNDLED} is the small model that comes with it.",
                },
                display_name={
                    **_DISPLAY_NAME,
                    "minLength": 1,
                    "description": "How this model is called in Plugboard.",
                },
                chat_template={**_CHAT_TEMPLATE, "default": "plain"},
                context_length={
                    "type": "integer",
                    "title": "Context length",
                    "minimum": 256,
                    "maximum": 131072,
                    "default": 2048,
                },
            ),
            request_schema=_offer(
                "local_gguf",
                max_tokens={"maximum": 4096, "default": 256},
            ),
        ),
    }


@lru_cache(maxsize=1)
def builtins() -> dict[str, TemplateView]:
    """Built-in templates by key, in the order they are offered."""
    return {
        key: TemplateView(
            name=d.name,
            kind=d.kind,
            description=d.description,
            fixed=d.fixed,
            creation_schema=d.creation_schema,
            request_schema=d.request_schema,
            builtin=key,
        )
        for key, d in _builtin_definitions().items()
    }


# --- a person's templates: create, read, update, delete ---------------------------------------


def _view(row: ModelTemplate, card_count: int = 0) -> TemplateView:
    return TemplateView(
        name=row.name,
        kind=row.kind,
        description=row.description,
        fixed=dict(row.fixed),
        creation_schema=dict(row.creation_schema),
        request_schema=dict(row.request_schema),
        id=row.id,
        card_count=card_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def list_templates(ws: Workspace) -> list[TemplateView]:
    """Built-ins first, then a person's own by name; each with how many cards it made."""
    with ws.session() as session:
        rows = session.exec(select(ModelTemplate).order_by(func.lower(ModelTemplate.name))).all()
        by_id: dict[int | None, int] = dict(
            session.exec(
                select(ModelCard.template_id, func.count(col(ModelCard.id)))
                .where(col(ModelCard.template_id).is_not(None))
                .group_by(col(ModelCard.template_id))
            ).all()
        )
        by_name: dict[str, int] = dict(
            session.exec(
                select(ModelCard.template_name, func.count(col(ModelCard.id)))
                .where(col(ModelCard.template_id).is_(None), ModelCard.template_name != "")
                .group_by(col(ModelCard.template_name))
            ).all()
        )
        mine = [_view(row, by_id.get(row.id, 0)) for row in rows]
    shipped = [replace(b, card_count=by_name.get(b.name, 0)) for b in builtins().values()]
    return [*shipped, *mine]


def get_template(ws: Workspace, ref: int | str) -> TemplateView:
    """By id, or by a built-in's key or name, or by a person's template name (any case)."""
    if isinstance(ref, str):
        wanted = ref.strip().lower()
        for key, template in builtins().items():
            if wanted in (key.lower(), template.name.lower()):
                return template
        if wanted.isdigit():
            ref = int(wanted)
    with ws.session() as session:
        if isinstance(ref, int):
            row = session.get(ModelTemplate, ref)
        else:
            row = session.exec(
                select(ModelTemplate).where(func.lower(ModelTemplate.name) == wanted)
            ).first()
        if row is None:
            raise NotFoundInCatalog(f"There is no template {ref!r} (it may have been deleted).")
        count = session.exec(
            select(func.count(col(ModelCard.id))).where(ModelCard.template_id == row.id)
        ).one()
        return _view(row, count)


def _apply(row: ModelTemplate, definition: TemplateDefinition) -> None:
    row.name = definition.name.strip()
    row.kind = definition.kind
    row.description = definition.description.strip()
    row.fixed = definition.fixed
    row.creation_schema = definition.creation_schema
    row.request_schema = definition.request_schema
    row.updated_at = utcnow()


def create_template(ws: Workspace, definition: TemplateDefinition) -> TemplateView:
    with ws.session() as session:
        errors = validate_definition(definition, session)
        if errors:
            raise ValidationFailed(errors)
        row = ModelTemplate(name="", kind=definition.kind)
        _apply(row, definition)
        session.add(row)
        session.flush()
        return _view(row)


def update_template(
    ws: Workspace, template_id: int, definition: TemplateDefinition
) -> TemplateView:
    """Change a person's template. Cards made from it keep their settings (a template is a
    starting point, not a live link); they follow a new name."""
    with ws.session() as session:
        row = session.get(ModelTemplate, template_id)
        if row is None:
            raise NotFoundInCatalog(f"Template {template_id} does not exist.")
        errors = validate_definition(definition, session, template_id=template_id)
        if errors:
            raise ValidationFailed(errors)
        _apply(row, definition)
        session.add(row)
        cards = session.exec(select(ModelCard).where(ModelCard.template_id == template_id)).all()
        for card in cards:
            card.template_name = row.name
            session.add(card)
        session.flush()
        return _view(row, len(cards))


def delete_template(ws: Workspace, template_id: int) -> None:
    """Cards made from it stay as they are (they keep the template's name)."""
    with ws.session() as session:
        row = session.get(ModelTemplate, template_id)
        if row is None:
            raise NotFoundInCatalog(f"Template {template_id} does not exist.")
        session.delete(row)


def copy_template(ws: Workspace, ref: int | str) -> TemplateView:
    """A person's own copy of any template (a built-in, say), named "<name> (copy)"."""
    source = get_template(ws, ref).definition()
    with ws.session() as session:
        taken = [*session.exec(select(ModelTemplate.name)).all()]
    taken += [b.name for b in builtins().values()]
    source.name = _free(f"{source.name} (copy)", taken)
    return create_template(ws, source)


# --- export and import ------------------------------------------------------------------------


def _without_secrets(definition: TemplateDefinition) -> TemplateDefinition:
    """Belt and braces for export: no key-shaped value leaves, whatever slipped in."""
    clean = TemplateDefinition(**json.loads(json.dumps(definition.to_dict())))
    for name, prop in properties(clean.creation_schema).items():
        if is_secret(name, prop):
            for key in ("default", "examples", "enum", "const"):
                prop.pop(key, None)
    headers = clean.fixed.get("extra_headers")
    if isinstance(headers, dict):
        for name in list(headers):
            value = headers[name]
            literal = _PLACEHOLDER.sub("", value) if isinstance(value, str) else "x"
            if _SENSITIVE_HEADER.search(str(name)) and literal.strip():
                del headers[name]

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return _SECRET_TEXT.sub("(removed)", value)
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    clean.fixed = scrub(clean.fixed)
    clean.creation_schema = scrub(clean.creation_schema)
    clean.request_schema = scrub(clean.request_schema)
    return clean


def export_template(template: TemplateView | TemplateDefinition) -> str:
    """The template as a JSON file's text: importable anywhere, never holding a secret."""
    definition = template.definition() if isinstance(template, TemplateView) else template
    data = {EXPORT_KEY: EXPORT_VERSION, **_without_secrets(definition).to_dict()}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def export_filename(template: TemplateView | TemplateDefinition) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", template.name).strip("-").lower() or "template"
    return f"{stem[:50]}.template.json"


def parse_template(text: str | bytes) -> TemplateDefinition:
    """A definition from JSON text (an export or hand-written). Raises ValidationFailed with
    "json" (not JSON, wrong shape) or per-field messages; does not check the schemas."""
    try:
        data = json.loads(text)
    except UnicodeDecodeError:
        raise ValidationFailed({"json": "The file is not UTF-8 text."}) from None
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            {"json": f"This is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."}
        ) from None
    if not isinstance(data, dict):
        raise ValidationFailed(
            {
                "json": "A template is a JSON object with name, kind, fixed, creation_schema "
                "and request_schema."
            }
        )
    errors: dict[str, str] = {}
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        errors["json"] = (
            f"Unknown field(s): {', '.join(unknown)}. A template has: {', '.join(TOP_LEVEL[1:])}."
        )
    version = data.get(EXPORT_KEY, EXPORT_VERSION)
    if version != EXPORT_VERSION:
        errors["json"] = (
            f"This file is in template format {version!r}; this Plugboard reads format "
            f"{EXPORT_VERSION}."
        )
    for key in ("name", "kind", "description"):
        if key in data and not isinstance(data[key], str):
            errors[key] = f"{key} must be text."
    for key in ("name", "kind"):
        if not data.get(key):
            errors.setdefault(key, f"The template has no {key}.")
    for key in ("fixed", "creation_schema", "request_schema"):
        if key in data and not isinstance(data[key], dict):
            errors[key] = f"{key} must be a JSON object."
    if errors:
        raise ValidationFailed(errors)
    return TemplateDefinition(
        name=data["name"],
        kind=data["kind"],
        description=data.get("description", ""),
        fixed=data.get("fixed") or {},
        creation_schema=data.get("creation_schema") or {},
        request_schema=data.get("request_schema") or {},
    )


def import_template(ws: Workspace, text: str | bytes) -> TemplateView:
    """Parse, check and store a template given as JSON (ValidationFailed says what is wrong)."""
    return create_template(ws, parse_template(text))
