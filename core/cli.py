"""`python -m core`: a small CLI for engineers and health checks.

    python -m core models
    python -m core chat "Gemma 3 270M (local)" "Why is the sky blue?" --max-tokens 64
    python -m core test "Gemma 3 270M (local)"
    PLUGBOARD_SECRET_KEY=<new> PLUGBOARD_OLD_SECRET_KEYS=<old> python -m core rotate-keys

MODEL is a card's display name. Failures print the plain-words message and exit non-zero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from core import catalog
from core.chat import TurnRequest, TurnResult, stream_turn
from core.inference.registry import make_adapter
from core.inference.types import TextDelta
from core.rotation import rotate_stored_secrets
from core.secrets import SecretKeyMismatch
from core.settings import load_settings, new_secret_key
from core.workspace import Workspace

EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Plugboard from the shell.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list model cards")
    chat = sub.add_parser("chat", help="send one prompt and stream the reply")
    chat.add_argument("model", help="the card's display name")
    chat.add_argument("prompt")
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int)
    test = sub.add_parser("test", help="test a model's connection")
    test.add_argument("model", help="the card's display name")
    sub.add_parser("keygen", help="print a new PLUGBOARD_SECRET_KEY")
    sub.add_parser(
        "rotate-keys",
        help="re-encrypt stored API keys under PLUGBOARD_SECRET_KEY "
        "(the old key given in PLUGBOARD_OLD_SECRET_KEYS)",
    )
    return parser


def _card(ws: Workspace, name: str, err: TextIO) -> catalog.CardView | None:
    card = catalog.find_card(ws, name)
    if card is None:
        names = ", ".join(repr(c.display_name) for c in catalog.list_cards(ws)) or "none"
        print(f"No model card named {name!r}. Known cards: {names}.", file=err)
    return card


def cmd_models(ws: Workspace, out: TextIO) -> int:
    cards = catalog.list_cards(ws)
    if not cards:
        print("No model cards yet. Add one in the app under Manage providers.", file=out)
        return 0
    width = max(len(c.display_name) for c in cards)
    for c in cards:
        status = {True: "ok", False: "failing", None: "untested"}[c.last_test_ok]
        remote = c.remote_model or "-"
        print(f"{c.display_name:<{width}}  {c.kind_label:<18}  {remote:<30}  {status}", file=out)
    return 0


def cmd_chat(ws: Workspace, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    card = _card(ws, args.model, err)
    if card is None:
        return EXIT_USAGE
    params = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    request = TurnRequest(
        model_id=card.id,
        prompt=args.prompt,
        system_prompt=args.system,
        params={k: v for k, v in params.items() if v is not None},
    )
    result: TurnResult | None = None
    for event in stream_turn(ws, request):
        if isinstance(event, TextDelta):
            out.write(event.text)
            out.flush()
        else:
            result = event
    out.write("\n")
    if result is None or result.error is not None:
        message = result.error.message if result and result.error else "No reply."
        print(f"Error: {message}", file=err)
        return EXIT_FAILED
    reply = result.reply
    if reply is not None:
        approx = "≈" if reply.tokens_estimated else ""
        speed = f", {reply.tokens_per_second:.1f} tok/s" if reply.tokens_per_second else ""
        print(
            f"[{reply.finish_reason or 'done'}; {approx}{reply.prompt_tokens} in / "
            f"{approx}{reply.completion_tokens} out; {reply.latency_ms or 0:.0f} ms{speed}]",
            file=err,
        )
    return 0


def cmd_test(ws: Workspace, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    card = _card(ws, args.model, err)
    if card is None:
        return EXIT_USAGE
    try:
        report = make_adapter(catalog.target_for(ws, card.id), ws.client).test_connection()
    except Exception as exc:  # noqa: BLE001 — a report, not a traceback
        print(f"Error: {exc}", file=err)
        return EXIT_FAILED
    catalog.record_test(ws, card.id, report)
    for step in report.steps:
        print(f"{'✓' if step.ok else '✗'} {step.layer}: {step.message}", file=out)
    if report.remote_models:
        print(f"  models on the server: {', '.join(report.remote_models[:20])}", file=out)
    return 0 if report.ok else EXIT_FAILED


def cmd_rotate_keys(ws: Workspace, out: TextIO, err: TextIO) -> int:
    try:
        count = rotate_stored_secrets(ws)
    except SecretKeyMismatch as exc:
        print(f"Error: {exc}", file=err)
        return EXIT_FAILED
    keys = "API key" if count == 1 else "API keys"
    print(f"Re-encrypted {count} stored {keys} under PLUGBOARD_SECRET_KEY.", file=out)
    if len(ws.settings.secret_keys) > 1:
        print(
            "PLUGBOARD_OLD_SECRET_KEYS is no longer needed: remove it and restart Plugboard.",
            file=out,
        )
    return 0


def main(
    argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    args = _parser().parse_args(argv)
    if args.command == "keygen":
        print(new_secret_key(), file=out)
        return 0
    try:
        settings = load_settings()
    except ValueError as exc:  # a bad environment variable: say which, no traceback
        print(f"Error: {exc}", file=err)
        return EXIT_USAGE
    ws = Workspace.open(settings)
    try:
        if args.command == "models":
            return cmd_models(ws, out)
        if args.command == "chat":
            return cmd_chat(ws, args, out, err)
        if args.command == "rotate-keys":
            return cmd_rotate_keys(ws, out, err)
        return cmd_test(ws, args, out, err)
    finally:
        ws.close()
