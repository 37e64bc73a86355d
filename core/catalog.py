"""Providers (connections) and model cards: create, read, update, delete, list, validate.

Validation collects every problem at once, keyed by form field, so a form can show each
message under the field it is about. Pages get read-only views, never ORM rows.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.egress import EgressPolicy
from core.inference import prompts
from core.inference.local_gguf import BUNDLED
from core.inference.registry import KindSpec, kinds, spec_for
from core.inference.target import AUTH_TYPES, Auth, Target
from core.inference.types import ConfigurationError, ConnectionReport
from core.params import clean_params
from core.secrets import SecretBox, SecretKeyMismatch, mask
from core.settings import Timeouts
from core.tables import ModelCard, Provider, utcnow
from core.workspace import Workspace

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
MAX_TAGS = 20


class ValidationFailed(Exception):
    """Raised with every problem found: {field: message}."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class NotFoundInCatalog(LookupError):
    pass


# --- drafts: what a form submits --------------------------------------------------------------


@dataclass
class ProviderDraft:
    name: str
    kind: str
    base_url: str = ""
    auth_type: str = "bearer"
    api_key: str | None = None  # None or blank keeps the stored key; auth "none" removes it
    auth_header: str = "Authorization"
    auth_prefix: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    connect_timeout: float | None = None
    read_timeout: float | None = None


@dataclass
class ModelDraft:
    display_name: str
    remote_model: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    context_length: int | None = None
    default_params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    template_id: int | None = None  # set by core.templates; an edit keeps the card's link
    template_name: str = ""


# --- views: what a page draws -----------------------------------------------------------------


@dataclass(frozen=True)
class ProviderView:
    id: int
    name: str
    kind: str
    kind_label: str
    base_url: str
    auth_type: str
    auth_header: str
    auth_prefix: str
    masked_key: str
    has_key: bool
    extra_headers: dict[str, str]
    settings: dict[str, Any]
    connect_timeout: float | None
    read_timeout: float | None
    created_at: datetime
    updated_at: datetime
    model_count: int = 0


@dataclass(frozen=True)
class CardView:
    id: int
    display_name: str
    remote_model: str
    description: str
    tags: list[str]
    context_length: int | None
    default_params: dict[str, Any]
    enabled: bool
    last_test_ok: bool | None
    last_test_at: datetime | None
    last_test_summary: str
    created_at: datetime
    updated_at: datetime
    provider: ProviderView
    template_id: int | None = None  # the template it was made from (core.templates)
    template_name: str = ""

    @property
    def kind(self) -> str:
        return self.provider.kind

    @property
    def kind_label(self) -> str:
        return self.provider.kind_label

    @property
    def spec(self) -> KindSpec:
        return spec_for(self.provider.kind)


# Masked keys by secret box and stored token: a key is decrypted once per process to show
# its mask, not again on every list of the catalog (each rerun of a page lists it).
_masks: weakref.WeakKeyDictionary[SecretBox, dict[str, str]] = weakref.WeakKeyDictionary()
_masks_lock = threading.Lock()


def _masked(box: SecretBox, token: str | None) -> str:
    if not token:
        return ""
    with _masks_lock:
        known = _masks.setdefault(box, {})
        hit = known.get(token)
    if hit is not None:
        return hit
    try:
        masked = mask(box.decrypt(token))
    except SecretKeyMismatch:
        return "(cannot be decrypted: enter the key again in Edit)"
    with _masks_lock:
        if len(known) >= 10_000:
            known.clear()
        known[token] = masked
    return masked


def _provider_view(box: SecretBox, p: Provider, model_count: int = 0) -> ProviderView:
    known = kinds().get(p.kind)
    return ProviderView(
        id=p.id or 0,
        name=p.name,
        kind=p.kind,
        kind_label=known.label if known else p.kind,
        base_url=p.base_url,
        auth_type=p.auth_type,
        auth_header=p.auth_header,
        auth_prefix=p.auth_prefix,
        masked_key=_masked(box, p.secret_token),
        has_key=bool(p.secret_token),
        extra_headers=dict(p.extra_headers),
        settings=dict(p.settings),
        connect_timeout=p.connect_timeout,
        read_timeout=p.read_timeout,
        created_at=p.created_at,
        updated_at=p.updated_at,
        model_count=model_count,
    )


def _card_view(card: ModelCard, provider: ProviderView) -> CardView:
    return CardView(
        id=card.id or 0,
        display_name=card.display_name,
        remote_model=card.remote_model,
        description=card.description,
        tags=list(card.tags),
        context_length=card.context_length,
        default_params=dict(card.default_params),
        enabled=card.enabled,
        last_test_ok=card.last_test_ok,
        last_test_at=card.last_test_at,
        last_test_summary=card.last_test_summary,
        created_at=card.created_at,
        updated_at=card.updated_at,
        provider=provider,
        template_id=card.template_id,
        template_name=card.template_name,
    )


# --- validation -------------------------------------------------------------------------------


def check_url(url: str) -> str | None:
    """None if `url` is a usable http(s) endpoint URL, else what is wrong with it."""
    if not url:
        return "Enter the endpoint URL."
    if any(ch.isspace() for ch in url):
        return "The URL cannot contain spaces."
    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decoded on access: a malformed "xn--" label fails only here
    except (httpx.InvalidURL, ValueError) as exc:
        return f"This is not a valid URL ({exc})."
    if parsed.scheme not in ("http", "https"):
        return "The URL must start with http:// or https://."
    if not host:
        return "The URL must name a host, as in http://localhost:8080/v1."
    if parsed.userinfo:
        return "Put credentials in the API key field, not in the URL."
    try:
        port = parsed.port
    except ValueError:
        return "The port number is not valid."
    if port is not None and not 0 < port < 65536:
        return "The port number is not valid."
    return None


def _check_model_file(path: str) -> str | None:
    if not path:
        return "Enter the path of a .gguf file."
    if path == BUNDLED:
        return None
    try:
        file = Path(path).expanduser()
    except RuntimeError:  # "~someone/…" for a user this machine does not know
        return f"There is no home folder for {path.split('/', 1)[0]}."
    if not file.is_file():
        return f"There is no file at {file}."
    if file.suffix.lower() != ".gguf":
        return "The file must be a .gguf model file."
    return None


def _check_settings(spec: KindSpec, settings: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    template = settings.get("chat_template")
    if template is not None:
        if not isinstance(template, str):
            errors["settings.chat_template"] = "The chat template is a name."
        elif template == "custom":
            source = settings.get("custom_template") or ""
            problem = (
                prompts.check_template(source)
                if isinstance(source, str)
                else "The template must be text."
            )
            if problem:
                errors["settings.custom_template"] = problem
        elif template not in prompts.BUILTIN_TEMPLATES:
            errors["settings.chat_template"] = f"Unknown chat template '{template}'."
    if spec.settings_rules:
        errors.update(spec.settings_rules(settings))
    return errors


def _check_timeout(value: float | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or not 0 < value <= 3600:  # NaN fails this too
        return "A timeout must be between 0 and 3600 seconds."
    return None


def validate_provider(
    session: Session,
    draft: ProviderDraft,
    *,
    provider_id: int | None = None,
    egress: EgressPolicy | None = None,
) -> dict[str, str]:
    errors: dict[str, str] = {}
    name = draft.name.strip()
    if not name:
        errors["provider_name"] = "Give the connection a name."
    elif len(name) > 200:
        errors["provider_name"] = "Keep the name under 200 characters."
    else:
        clash = session.exec(
            select(Provider.id).where(func.lower(Provider.name) == name.lower())
        ).first()
        if clash is not None and clash != provider_id:
            errors["provider_name"] = f"A connection named '{name}' already exists."
    spec = kinds().get(draft.kind)
    if spec is None:
        errors["kind"] = f"Unknown connection kind '{draft.kind}'."
        return errors
    url = draft.base_url.strip()
    problem = _check_model_file(url) if draft.kind == "local_gguf" else check_url(url)
    if not problem and egress and draft.kind != "local_gguf":
        problem = egress.check_url(url)
    if problem:
        errors["base_url"] = problem
    if draft.auth_type not in spec.auth_types:
        errors["auth_type"] = f"{spec.label} connections cannot use '{draft.auth_type}' auth."
    elif draft.auth_type != "none":
        key = (draft.api_key or "").strip()
        stored = provider_id is not None and _has_stored_key(session, provider_id)
        if not key:
            if not stored:
                errors["api_key"] = "Enter the API key (or choose No authentication)."
        elif any(ch.isspace() for ch in key):
            errors["api_key"] = "The API key contains spaces or line breaks; paste it again."
        elif not _sendable(key):
            errors["api_key"] = (
                "The API key contains a character no request can carry (an invisible space, "
                "a typographic dash…); paste it again."
            )
    if draft.auth_type == "api_key" and not _HEADER_NAME.match(draft.auth_header.strip() or "-"):
        errors["auth_header"] = "A header name uses letters, digits and - only, e.g. X-API-Key."
    if "\n" in draft.auth_prefix or "\r" in draft.auth_prefix:
        errors["auth_prefix"] = "The prefix must be on one line."
    elif not _sendable(draft.auth_prefix):
        errors["auth_prefix"] = "The prefix can use plain ASCII characters only."
    for header, value in draft.extra_headers.items():
        if not _HEADER_NAME.match(header):
            errors["extra_headers"] = f"'{header}' is not a valid header name."
        elif "\n" in value or "\r" in value:
            errors["extra_headers"] = f"The value of '{header}' must be on one line."
        elif not _sendable(value):
            errors["extra_headers"] = (
                f"The value of '{header}' can use plain ASCII characters only."
            )
    for key in ("connect_timeout", "read_timeout"):
        problem = _check_timeout(getattr(draft, key))
        if problem:
            errors[key] = problem
    errors.update(_check_settings(spec, draft.settings))
    return errors


def _sendable(value: str) -> bool:
    """Whether an HTTP header value can carry `value` (httpx encodes headers as ASCII)."""
    return value.isascii() and value.replace("\t", " ").isprintable()


def _has_stored_key(session: Session, provider_id: int) -> bool:
    provider = session.get(Provider, provider_id)
    return bool(provider and provider.secret_token)


def clean_tags(tags: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for tag in tags:
        tag = tag.strip()
        if tag and tag.lower() not in seen:
            seen[tag.lower()] = tag
    return list(seen.values())


def validate_model(
    session: Session, draft: ModelDraft, kind: str, *, model_id: int | None = None
) -> dict[str, str]:
    errors: dict[str, str] = {}
    name = draft.display_name.strip()
    if not name:
        errors["display_name"] = "Give the model a display name."
    elif len(name) > 200:
        errors["display_name"] = "Keep the display name under 200 characters."
    else:
        clash = session.exec(
            select(ModelCard.id).where(func.lower(ModelCard.display_name) == name.lower())
        ).first()
        if clash is not None and clash != model_id:
            errors["display_name"] = f"A model named '{name}' already exists; pick another name."
    spec = kinds().get(kind)
    if spec and spec.needs_model and not draft.remote_model.strip():
        errors["remote_model"] = "Enter the model name the server expects."
    if len(draft.remote_model) > 500:
        errors["remote_model"] = "Keep the model name under 500 characters."
    tags = clean_tags(draft.tags)
    if len(tags) > MAX_TAGS or any(len(t) > 40 for t in tags):
        errors["tags"] = f"Use at most {MAX_TAGS} tags of up to 40 characters each."
    ctx = draft.context_length
    if ctx is not None and (
        isinstance(ctx, bool) or not isinstance(ctx, int) or not 1 <= ctx <= 10_000_000
    ):
        errors["context_length"] = "The context length is a whole number of tokens, 1 or more."
        ctx = None
    if spec:
        errors.update(spec.check_params(draft.default_params, context_length=ctx, prefix="params."))
    return errors


def _raise_if(errors: dict[str, str]) -> None:
    if errors:
        raise ValidationFailed(errors)


# --- writes -----------------------------------------------------------------------------------


def _apply_provider(box: SecretBox, provider: Provider, draft: ProviderDraft) -> None:
    provider.name = draft.name.strip()
    provider.kind = draft.kind
    provider.base_url = draft.base_url.strip()
    provider.auth_type = draft.auth_type
    provider.auth_header = draft.auth_header.strip() or "Authorization"
    provider.auth_prefix = draft.auth_prefix.strip()
    provider.extra_headers = {k.strip(): v.strip() for k, v in draft.extra_headers.items()}
    provider.settings = dict(draft.settings)
    provider.connect_timeout = draft.connect_timeout
    provider.read_timeout = draft.read_timeout
    if draft.auth_type == "none":
        provider.secret_token = None
    elif draft.api_key and draft.api_key.strip():  # blank keeps the stored key
        provider.secret_token = box.encrypt(draft.api_key.strip())
    provider.updated_at = utcnow()


def _apply_model(card: ModelCard, draft: ModelDraft) -> None:
    card.display_name = draft.display_name.strip()
    card.remote_model = draft.remote_model.strip()
    card.description = draft.description.strip()
    card.tags = clean_tags(draft.tags)
    card.context_length = draft.context_length
    card.default_params = clean_params(draft.default_params)
    card.enabled = draft.enabled
    if draft.template_name:  # made from a template (an edit form leaves the link as it is)
        card.template_id = draft.template_id
        card.template_name = draft.template_name
    card.updated_at = utcnow()


def _commit_or_explain(session: Session) -> None:
    """Unique names are checked first; a race that still collides gets the same message."""
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        text = str(exc.orig).lower()
        if "display_name" in text:
            raise ValidationFailed(
                {"display_name": "A model with this name already exists."}
            ) from None
        if "name" in text:
            raise ValidationFailed(
                {"provider_name": "A connection with this name already exists."}
            ) from None
        raise


def create_provider(ws: Workspace, draft: ProviderDraft) -> ProviderView:
    with ws.session() as session:
        _raise_if(validate_provider(session, draft, egress=ws.settings.egress))
        provider = Provider(name="", kind=draft.kind)
        _apply_provider(ws.box, provider, draft)
        session.add(provider)
        _commit_or_explain(session)
        return _provider_view(ws.box, provider)


def update_provider(ws: Workspace, provider_id: int, draft: ProviderDraft) -> ProviderView:
    with ws.session() as session:
        provider = _get_provider(session, provider_id)
        _raise_if(
            validate_provider(session, draft, provider_id=provider_id, egress=ws.settings.egress)
        )
        _apply_provider(ws.box, provider, draft)
        session.add(provider)
        _commit_or_explain(session)
        return _provider_view(ws.box, provider)


def delete_provider(ws: Workspace, provider_id: int) -> None:
    """Deletes the connection and, by cascade, its model cards (conversations stay)."""
    with ws.session() as session:
        session.delete(_get_provider(session, provider_id))


def create_model(ws: Workspace, provider_id: int, draft: ModelDraft) -> CardView:
    with ws.session() as session:
        provider = _get_provider(session, provider_id)
        _raise_if(validate_model(session, draft, provider.kind))
        card = ModelCard(provider_id=provider_id, display_name="")
        _apply_model(card, draft)
        session.add(card)
        _commit_or_explain(session)
        return _card_view(card, _provider_view(ws.box, provider))


def add_custom_model(ws: Workspace, provider: ProviderDraft, model: ModelDraft) -> CardView:
    """The Add-custom-model form: a new connection and its first card, checked together."""
    with ws.session() as session:
        errors = validate_provider(session, provider, egress=ws.settings.egress)
        errors.update(validate_model(session, model, provider.kind))
        _raise_if(errors)
        row = Provider(name="", kind=provider.kind)
        _apply_provider(ws.box, row, provider)
        session.add(row)
        _commit_or_explain(session)
        card = ModelCard(provider_id=row.id, display_name="")  # type: ignore[arg-type]
        _apply_model(card, model)
        session.add(card)
        _commit_or_explain(session)
        return _card_view(card, _provider_view(ws.box, row, 1))


def update_model(
    ws: Workspace,
    model_id: int,
    draft: ModelDraft,
    provider_draft: ProviderDraft | None = None,
) -> CardView:
    """Edit a card and, when given, its connection (shared by the connection's other cards)."""
    with ws.session() as session:
        card = _get_card(session, model_id)
        provider = _get_provider(session, card.provider_id)
        kind = provider_draft.kind if provider_draft else provider.kind
        errors = validate_model(session, draft, kind, model_id=model_id)
        if provider_draft is not None:
            errors.update(
                validate_provider(
                    session, provider_draft, provider_id=provider.id, egress=ws.settings.egress
                )
            )
        _raise_if(errors)
        if provider_draft is not None:
            _apply_provider(ws.box, provider, provider_draft)
            session.add(provider)
        _apply_model(card, draft)
        session.add(card)
        _commit_or_explain(session)
        return _card_view(card, _provider_view(ws.box, provider))


def delete_model(ws: Workspace, model_id: int) -> None:
    """Past conversations keep the model's name; the card itself is gone."""
    with ws.session() as session:
        session.delete(_get_card(session, model_id))


def record_test(ws: Workspace, model_id: int, report: ConnectionReport) -> None:
    with ws.session() as session:
        card = session.get(ModelCard, model_id)
        if card is None:
            return
        card.last_test_ok = report.ok
        card.last_test_at = utcnow()
        card.last_test_summary = report.summary[:2000]
        session.add(card)


# --- reads ------------------------------------------------------------------------------------


def _get_provider(session: Session, provider_id: int) -> Provider:
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise NotFoundInCatalog(
            f"Connection {provider_id} does not exist (it may have been deleted)."
        )
    return provider


def _get_card(session: Session, model_id: int) -> ModelCard:
    card = session.get(ModelCard, model_id)
    if card is None:
        raise NotFoundInCatalog(f"Model {model_id} does not exist (it may have been deleted).")
    return card


def list_providers(ws: Workspace) -> list[ProviderView]:
    with ws.session() as session:
        counts = dict(
            session.exec(
                select(ModelCard.provider_id, func.count(col(ModelCard.id))).group_by(
                    col(ModelCard.provider_id)
                )
            ).all()
        )
        rows = session.exec(select(Provider).order_by(func.lower(Provider.name))).all()
        return [_provider_view(ws.box, p, counts.get(p.id or 0, 0)) for p in rows]


def get_provider(ws: Workspace, provider_id: int) -> ProviderView:
    with ws.session() as session:
        return _provider_view(ws.box, _get_provider(session, provider_id))


# The last full list of cards per database, with the fingerprint of the rows it was made from.
_snapshots: weakref.WeakKeyDictionary[Engine, tuple[SecretBox, int, list[CardView]]] = (
    weakref.WeakKeyDictionary()
)
_snapshots_lock = threading.Lock()
_FINGERPRINT = "plugboard.catalog_fingerprint"  # its key in a pooled connection's info


def _catalog_fingerprint(session: Session) -> int:
    """A hash of every column of every card and connection row, read raw (no ORM objects).

    Any change to either table, by this process or another, gives another fingerprint; it costs
    a fraction of building the views, so an unchanged catalog is listed from the last build.
    On SQLite even that read is skipped while the connection shows that nothing at all was
    written since its last fingerprint: `PRAGMA data_version` moves with every commit of any
    other connection (of any process), `total_changes` with every change made through this one.
    """
    pooled = session.connection().connection
    cursor = pooled.cursor()  # the driver's own: plain tuples
    try:
        writes = None
        driver = pooled.driver_connection
        if isinstance(driver, sqlite3.Connection):
            cursor.execute("PRAGMA data_version")
            writes = (tuple(cursor.fetchone() or ()), driver.total_changes)
            seen = pooled.info.get(_FINGERPRINT)
            if seen is not None and seen[0] == writes:
                return int(seen[1])
        rows = []
        for table in (ModelCard.__table__.name, Provider.__table__.name):  # type: ignore[attr-defined]
            cursor.execute(f"SELECT * FROM {table} ORDER BY id")
            rows.append(tuple(cursor.fetchall()))
    finally:
        cursor.close()
    try:
        fingerprint = hash(tuple(rows))
    except TypeError:  # a driver that gives JSON columns as dicts (psycopg)
        fingerprint = hash(repr(rows))
    if writes is not None:
        pooled.info[_FINGERPRINT] = (writes, fingerprint)  # lives and dies with the connection
    return fingerprint


def _all_cards(ws: Workspace) -> list[CardView]:
    """Every card, by name: rebuilt only when a card or connection row changed."""
    with ws.session() as session:
        fingerprint = _catalog_fingerprint(session)
        with _snapshots_lock:
            cached = _snapshots.get(ws.engine)
        if cached is not None and cached[0] is ws.box and cached[1] == fingerprint:
            return cached[2]
        rows = session.exec(
            select(ModelCard, Provider)
            .join(Provider, col(ModelCard.provider_id) == col(Provider.id))
            .order_by(func.lower(ModelCard.display_name))
        ).all()
        providers: dict[int, ProviderView] = {}
        cards: list[CardView] = []
        for card, provider in rows:
            if provider.id not in providers:
                providers[provider.id or 0] = _provider_view(ws.box, provider)
            cards.append(_card_view(card, providers[provider.id or 0]))
    with _snapshots_lock:
        _snapshots[ws.engine] = (ws.box, fingerprint, cards)
    return cards


def list_cards(
    ws: Workspace, *, search: str = "", kind: str | None = None, tag: str | None = None
) -> list[CardView]:
    """The cards matching the filters, by name (a new list; its views are shared, read-only)."""
    cards = _all_cards(ws)
    needle = search.strip().lower()
    return [
        c
        for c in cards
        if (kind is None or c.kind == kind)
        and (tag is None or tag.lower() in (t.lower() for t in c.tags))
        and (
            not needle
            or needle in c.display_name.lower()
            or needle in c.remote_model.lower()
            or needle in c.provider.name.lower()
            or any(needle in t.lower() for t in c.tags)
        )
    ]


def get_card(ws: Workspace, model_id: int) -> CardView:
    with ws.session() as session:
        card = _get_card(session, model_id)
        provider = _get_provider(session, card.provider_id)
        count = session.exec(
            select(func.count(col(ModelCard.id))).where(ModelCard.provider_id == provider.id)
        ).one()
        return _card_view(card, _provider_view(ws.box, provider, count))


def find_card(ws: Workspace, display_name: str) -> CardView | None:
    """A card by display name, case-insensitively (the CLI addresses models this way)."""
    with ws.session() as session:
        card_id = session.exec(
            select(ModelCard.id).where(
                func.lower(ModelCard.display_name) == display_name.strip().lower()
            )
        ).first()
    return get_card(ws, card_id) if card_id is not None else None


def all_tags(cards: Iterable[CardView]) -> list[str]:
    return sorted(clean_tags(t for c in cards for t in c.tags), key=str.lower)


# --- targets: what adapters need --------------------------------------------------------------


def _timeouts(ws: Workspace, connect: float | None, read: float | None) -> Timeouts:
    base = ws.settings.timeouts
    return replace(base, connect=connect or base.connect, read=read or base.read)


def _target(
    ws: Workspace,
    draft: ProviderDraft,
    model: ModelDraft,
    secret: str | None,
) -> Target:
    spec = spec_for(draft.kind)
    auth_type = draft.auth_type if draft.auth_type in AUTH_TYPES else "none"
    return Target(
        kind=draft.kind,
        base_url=draft.base_url.strip(),
        model=model.remote_model.strip(),
        name=model.display_name.strip(),
        auth=Auth(
            auth_type,
            secret,
            draft.auth_header.strip() or "Authorization",
            draft.auth_prefix.strip(),
        ),
        headers=dict(draft.extra_headers),
        settings={**spec.settings_defaults, **draft.settings},
        timeouts=_timeouts(ws, draft.connect_timeout, draft.read_timeout),
        context_length=model.context_length,
        max_retries=ws.settings.max_retries,
        max_retry_wait=ws.settings.max_retry_wait,
        egress=ws.settings.egress,
    )


def provider_draft(view: ProviderView) -> ProviderDraft:
    """A draft that reproduces a stored provider (its key kept as stored)."""
    return ProviderDraft(
        name=view.name,
        kind=view.kind,
        base_url=view.base_url,
        auth_type=view.auth_type,
        api_key=None,
        auth_header=view.auth_header,
        auth_prefix=view.auth_prefix,
        extra_headers=dict(view.extra_headers),
        settings=dict(view.settings),
        connect_timeout=view.connect_timeout,
        read_timeout=view.read_timeout,
    )


def model_draft(view: CardView) -> ModelDraft:
    return ModelDraft(
        display_name=view.display_name,
        remote_model=view.remote_model,
        description=view.description,
        tags=list(view.tags),
        context_length=view.context_length,
        default_params=dict(view.default_params),
        enabled=view.enabled,
        template_id=view.template_id,
        template_name=view.template_name,
    )


def stored_secret(ws: Workspace, provider_id: int) -> str | None:
    with ws.session() as session:
        token = _get_provider(session, provider_id).secret_token
    if not token:
        return None
    try:
        return ws.box.decrypt(token)
    except SecretKeyMismatch as exc:
        raise ConfigurationError(str(exc)) from None


def target_for(ws: Workspace, model_id: int) -> Target:
    return target_for_card(ws, get_card(ws, model_id))


def target_for_card(ws: Workspace, card: CardView) -> Target:
    """The adapter's target for a card just read (its key decrypted now)."""
    secret = stored_secret(ws, card.provider.id) if card.provider.has_key else None
    return _target(ws, provider_draft(card.provider), model_draft(card), secret)


def draft_target(
    ws: Workspace,
    provider: ProviderDraft,
    model: ModelDraft,
    *,
    provider_id: int | None = None,
) -> Target:
    """A target for a form not saved yet (Test connection); a blank key uses the stored one."""
    secret = (provider.api_key or "").strip() or None
    if secret is None and provider_id is not None and provider.auth_type != "none":
        secret = stored_secret(ws, provider_id)
    return _target(ws, provider, model, secret)
