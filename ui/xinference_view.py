"""Manage an Xinference server from its connection: running models, registered custom models,
registering one (form or pasted JSON), launching with progress, terminating, unregistering.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from core import catalog
from core.catalog import ModelDraft, ProviderView, ValidationFailed
from core.inference import xinference as xi
from core.inference.types import InferenceError
from core.workspace import Workspace
from ui.flash import flash

LAUNCHED = "xi_launched"  # the UID just launched, until it gets a card
REGISTERED = "xi_registered"  # (name, schema version, JSON sent) after a registration
LANGUAGES = ("en", "zh", "fr", "de", "es", "ja", "ko", "ru", "pt", "it")
SPEC_COLUMNS = (
    "model_format",
    "size_in_billions",
    "quantizations",
    "model_id",
    "model_uri",
    "model_hub",
    "model_file_name_template",
)


def _server(ws: Workspace, provider: ProviderView) -> xi.XinferenceServer:
    target = catalog.draft_target(
        ws,
        catalog.provider_draft(provider),
        ModelDraft(display_name="admin"),
        provider_id=provider.id,
    )
    return xi.XinferenceServer(target, ws.client)


def _failed(err: InferenceError) -> None:
    st.error(err.message, icon=":material/error:")
    if err.detail:
        with st.expander("Details"):
            st.code(err.detail, language=None, wrap_lines=True)


def add_card(ws: Workspace, provider: ProviderView, model: xi.RunningModel) -> None:
    """A model card for a running model: its UID is the card's model name."""
    try:
        card = catalog.create_model(
            ws,
            provider.id,
            ModelDraft(
                display_name=f"{model.name} on {provider.name}",
                remote_model=model.uid,
                description=model.description or model.summary,
                tags=["xinference"],
                context_length=model.context_length,
            ),
        )
    except ValidationFailed as exc:
        st.error(" ".join(exc.errors.values()))
        return
    flash(f"Added “{card.display_name}”.")
    st.rerun()


# --- running models --------------------------------------------------------------------------


def running_tab(ws: Workspace, provider: ProviderView, server: xi.XinferenceServer) -> None:
    try:
        models = server.running_models()
    except InferenceError as err:
        _failed(err)
        return
    if not models:
        st.info("No model is running. Launch one from the Registered tab.", icon=":material/info:")
        return
    st.caption("A model just launched is listed while it still loads.")
    carded = {c.remote_model for c in catalog.list_cards(ws) if c.provider.id == provider.id}
    for model in models:
        with st.container(border=True):
            st.markdown(f"**{model.uid}** · {model.summary}")
            left, right = st.columns(2)
            if model.uid in carded:
                left.caption(":material/check: Has a model card")
            elif left.button(
                "Add as model card", key=f"xi_card_{model.uid}", icon=":material/add:"
            ):
                add_card(ws, provider, model)
            sure = right.checkbox("Sure?", key=f"xi_stop_sure_{model.uid}")
            if right.button(
                "Terminate",
                key=f"xi_stop_{model.uid}",
                icon=":material/stop_circle:",
                disabled=not sure,
            ):
                try:
                    server.terminate(model.uid)
                except InferenceError as err:
                    _failed(err)
                else:
                    st.success(f"Stopped {model.uid}.")
                    st.rerun()


# --- registered models and launching ---------------------------------------------------------


def registered_tab(ws: Workspace, provider: ProviderView, server: xi.XinferenceServer) -> None:
    try:
        registered = server.registered_models()
    except InferenceError as err:
        _failed(err)
        return
    custom = [m for m in registered if not m.is_builtin]
    names = [m.name for m in registered]
    st.caption(
        f"{len(custom)} custom and {len(registered) - len(custom)} built-in models can be launched."
    )
    launched_notice(ws, provider, server)
    launch_form(ws, provider, server, names)
    for model in custom:
        with st.container(border=True):
            left, right = st.columns([3, 1], vertical_alignment="center")
            left.markdown(f"**{model.name}** · custom model")
            sure = right.checkbox("Sure?", key=f"xi_unreg_sure_{model.name}")
            if right.button("Unregister", key=f"xi_unreg_{model.name}", disabled=not sure):
                try:
                    server.unregister(model.name)
                except InferenceError as err:
                    _failed(err)
                else:
                    st.success(f"Unregistered {model.name}.")
                    st.rerun()


def launch_form(
    ws: Workspace, provider: ProviderView, server: xi.XinferenceServer, names: list[str]
) -> None:
    with st.form("xi_launch", border=True):
        st.markdown("**Launch a model**")
        name = st.selectbox("Model", names, key="xi_launch_name") if names else ""
        c1, c2, c3, c4 = st.columns(4)
        model_format = c1.selectbox("Format", xi.MODEL_FORMATS, key="xi_launch_format")
        engine = c2.selectbox(
            "Engine",
            xi.ENGINES,
            key="xi_launch_engine",
            help="llama.cpp for ggufv2, MLX for mlx; the others for pytorch-like formats.",
        )
        size = c3.text_input("Size (billions)", key="xi_launch_size", placeholder="e.g. 7 or 0_5")
        quantization = c4.text_input(
            "Quantization", key="xi_launch_quant", placeholder="none, 4-bit, q4_k_m…"
        )
        uid = st.text_input(
            "Model UID (optional)", key="xi_launch_uid", help="Defaults to the model name."
        )
        go = st.form_submit_button("Launch", type="primary", icon=":material/rocket_launch:")
    if not go or not name:
        return
    if engine not in xi.engines_for(model_format):
        st.warning(f"{engine} may not run {model_format} models; Xinference will say if it cannot.")
    try:
        launched = server.launch(
            str(name),
            engine,
            size.strip() or None,
            model_format,
            quantization.strip() or None,
            uid.strip() or None,
        )
    except InferenceError as err:
        _failed(err)
        return
    if wait_for(server, launched) is not None:
        st.session_state[LAUNCHED] = launched  # offered as a card until added or dismissed
        st.rerun()


def launched_notice(ws: Workspace, provider: ProviderView, server: xi.XinferenceServer) -> None:
    uid = st.session_state.get(LAUNCHED)
    if not uid:
        return
    try:
        model = server.describe(uid)
    except InferenceError as err:
        st.session_state.pop(LAUNCHED, None)
        _failed(err)
        return
    st.success(f"{uid} is ready: {model.summary}.", icon=":material/check_circle:")
    add, dismiss = st.columns(2)
    if add.button("Add as model card", key="xi_card_launched", icon=":material/add:"):
        st.session_state.pop(LAUNCHED, None)
        add_card(ws, provider, model)
    if dismiss.button("Dismiss", key="xi_launched_dismiss"):
        st.session_state.pop(LAUNCHED, None)
        st.rerun()


def wait_for(server: xi.XinferenceServer, uid: str) -> xi.RunningModel | None:
    """Poll until the launched model answers, with a progress bar or the elapsed time."""
    with st.status(f"Launching {uid}…", expanded=True) as status:
        bar = st.progress(0.0, text="Waiting for the server…")

        def progress(p: xi.LaunchProgress) -> None:
            text = f"{p.elapsed:.0f} s · {p.message or 'loading'}"
            bar.progress(
                p.progress if p.progress is not None else min(0.95, p.polls / 20), text=text
            )

        try:
            model = server.wait_until_ready(uid, on_progress=progress)
        except InferenceError as err:
            status.update(label=f"Launching {uid} failed", state="error")
            _failed(err)
            st.caption("The Xinference server's own log says more.")
            return None
        bar.progress(1.0, text="Ready")
        status.update(label=f"{uid} is ready", state="complete", expanded=False)
        return model


# --- registering a custom model --------------------------------------------------------------


def _specs_from_rows(rows: list[dict[str, Any]]) -> list[xi.CustomLLMSpec]:
    specs = []
    for row in rows:
        if not any(str(v or "").strip() for v in row.values()):
            continue
        quantizations = [
            q.strip() for q in str(row.get("quantizations") or "none").split(",") if q.strip()
        ]
        specs.append(
            xi.CustomLLMSpec(
                model_format=str(row.get("model_format") or "pytorch"),
                size_in_billions=str(row.get("size_in_billions") or "").strip() or 0,
                quantizations=quantizations or ["none"],
                model_id=str(row.get("model_id") or ""),
                model_uri=str(row.get("model_uri") or ""),
                model_hub=str(row.get("model_hub") or "huggingface"),
                model_file_name_template=str(row.get("model_file_name_template") or ""),
            )
        )
    return specs


def _show_errors(errors: dict[str, str]) -> None:
    st.error(
        "\n\n".join(f"**{field}**: {message}" for field, message in errors.items()),
        icon=":material/error:",
    )


def register_tab(server: xi.XinferenceServer) -> None:
    if done := st.session_state.pop(REGISTERED, None):
        name, version, sent = done
        st.success(
            f"Registered {name} (schema version {version}). Launch it from the Registered tab.",
            icon=":material/check_circle:",
        )
        with st.expander("What was sent"):
            st.code(sent, language="json")
    form_tab, json_tab = st.tabs(["Form", "Paste JSON"])
    with form_tab, st.form("xi_register", border=False):
        left, right = st.columns(2)
        name = left.text_input("Model name", key="xi_reg_name", help="No spaces or + / ? % # & =.")
        family = right.text_input(
            "Model family",
            key="xi_reg_family",
            help="Required for custom LLMs, e.g. qwen2.5-instruct or your own name.",
        )
        languages = left.multiselect(
            "Languages", LANGUAGES, default=["en"], key="xi_reg_langs", accept_new_options=True
        )
        abilities = right.multiselect(
            "Abilities", xi.FORM_ABILITIES, default=["chat"], key="xi_reg_abilities"
        )
        description = st.text_input("Description", key="xi_reg_description")
        context_length = st.number_input(
            "Context length", min_value=1, value=4096, step=1, key="xi_reg_ctx"
        )
        st.caption(
            "Model specs: one row per way to get the weights (quantizations comma-separated)."
        )
        rows = st.data_editor(
            [
                {
                    "model_format": "pytorch",
                    "size_in_billions": "7",
                    "quantizations": "none",
                    "model_id": "",
                    "model_uri": "",
                    "model_hub": "huggingface",
                    "model_file_name_template": "",
                }
            ],
            num_rows="dynamic",
            column_config={
                "model_format": st.column_config.SelectboxColumn(
                    "Format", options=xi.MODEL_FORMATS
                ),
                "model_hub": st.column_config.SelectboxColumn("Hub", options=xi.MODEL_HUBS),
            },
            key="xi_reg_specs",
        )
        template = st.text_area(
            "Chat template",
            key="xi_reg_template",
            height=100,
            help="Jinja2, or the name of a built-in family whose template to use.",
        )
        persist = st.toggle("Keep it after the server restarts (persist)", key="xi_reg_persist")
        submitted = st.form_submit_button(
            "Register", type="primary", icon=":material/app_registration:"
        )
    if submitted:
        model = xi.CustomLLM(
            name=name,
            family=family,
            languages=list(languages),
            abilities=list(abilities),
            description=description,
            context_length=int(context_length),
            specs=_specs_from_rows(list(rows)),
            chat_template=template,
        )
        _register(server, model, persist)
    with json_tab:
        pasted = st.text_area(
            "Custom model JSON (either schema version)",
            height=220,
            key="xi_reg_json",
            placeholder='{"version": 2, "model_name": "my-model", …}',
        )
        persist_json = st.toggle("Persist", key="xi_reg_json_persist")
        if st.button("Register from JSON", key="xi_reg_json_go", icon=":material/data_object:"):
            try:
                model = xi.parse_spec(pasted)
            except (InferenceError, ValueError) as exc:
                st.error(getattr(exc, "message", str(exc)), icon=":material/error:")
            else:
                _register(server, model, persist_json)


def _register(server: xi.XinferenceServer, model: xi.CustomLLM, persist: bool) -> None:
    try:
        known = server.known_families()
    except InferenceError:
        known = None
    errors = xi.validate_spec(model, known)
    if errors:
        _show_errors(errors)
        return
    for note in xi.spec_notes(model, known):
        st.caption(note)
    try:
        version = server.register(model, persist=persist, known=known)
    except xi.SpecInvalid as err:
        _show_errors(err.errors)
    except InferenceError as err:
        _failed(err)
    else:
        # Redraw the dialog so the Registered tab lists it; say so once, above the form.
        st.session_state[REGISTERED] = (
            model.name,
            version,
            json.dumps(model.to_dict(version), indent=2),
        )
        st.rerun()


# --- the dialog ------------------------------------------------------------------------------


def manage_server(ws: Workspace, provider: ProviderView) -> None:
    server = _server(ws, provider)
    running, registered, register = st.tabs(["Running", "Registered", "Register a custom model"])
    with running:
        running_tab(ws, provider, server)
    with registered:
        registered_tab(ws, provider, server)
    with register:
        register_tab(server)
