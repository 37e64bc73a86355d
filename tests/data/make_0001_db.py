"""Make tests/data/plugboard-0001.db: a database written by the first released schema (0001).

    python tests/data/make_0001_db.py [output.db]

The data is written by the app itself as it was then: `core/` of commit RELEASE (the last one
whose schema head is 0001) is extracted from git into a temporary folder and run in a child
process against the OpenAI-compatible test server. It adds connections of each auth type with
encrypted keys (under SECRET_KEY), cards, a connection test, chats with good, failed and
stopped replies, and deletes a card so some messages and usage events outlive it. The file
is then checkpointed, vacuumed and switched to journal_mode=DELETE: one self-contained file.

tests/integration/test_migration_history.py upgrades a copy of it to head.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(__file__).resolve().parent / "plugboard-0001.db"
RELEASE = "5beee7b"  # "Browser end-to-end tests": the last commit with only migration 0001

# The test knows these: the key the API keys were encrypted with, and the keys themselves.
SECRET_KEY = "3Jx6m0qfN1o4qG5Tz8d0pY2wQm7bV9cL4sR1eK6hA0U="
OPENAI_KEY = "sk-proj-0001-release-OPENAI-7f3a9c2e5b1d"
GATEWAY_KEY = "gw-0001-release-GATEWAY-c4e8a1f6"
LONG_PROMPT = "Summarise this log:\n" + "\n".join(
    f"2026-11-20T10:{n // 60:02d}:{n % 60:02d}Z worker-{n % 7} processed batch {n} in {n * 37 % 900} ms"
    for n in range(120)
)

# Runs with PYTHONPATH pointing at the released core/ (argv[1]: the test server's /v1 URL).
GENERATE = r"""
import sys
import httpx
from core import catalog, history
from core.catalog import ModelDraft, ProviderDraft
from core.chat import TurnRequest, collect, stream_turn
from core.inference.registry import make_adapter
from core.workspace import Workspace

url, openai_key, gateway_key, long_prompt = sys.argv[1:5]
ws = Workspace.open()  # migrates to 0001 and adds the bundled local model


def fault(**options):
    httpx.post(url.removesuffix("/v1") + "/__control/fault", json=options).raise_for_status()


def turn(card, prompt, conversation=None, **kw):
    result = collect(stream_turn(ws, TurnRequest(model_id=card.id, prompt=prompt,
                                                 conversation_id=conversation, **kw)))
    return result


gpt = catalog.add_custom_model(
    ws,
    ProviderDraft(
        name="OpenAI", kind="openai_compat", base_url=url, auth_type="bearer",
        api_key=openai_key, extra_headers={"OpenAI-Organization": "org-plugboard"},
        connect_timeout=10.0, read_timeout=120.0,
    ),
    ModelDraft(
        display_name="GPT-4o mini", remote_model="test-model",
        description="OpenAI's small model, for everyday questions.",
        tags=["openai", "fast"], context_length=8192,
        default_params={"temperature": 0.7, "max_tokens": 512, "top_p": 0.95},
    ),
)
echo = catalog.create_model(
    ws, gpt.provider.id,
    ModelDraft(display_name="Echo 1 (retired)", remote_model="echo-1", tags=["old"]),
)
gateway = catalog.add_custom_model(
    ws,
    ProviderDraft(
        name="Internal gateway", kind="openai_compat", base_url="http://127.0.0.1:9/v1",
        auth_type="api_key", auth_header="X-API-Key", auth_prefix="Token",
        api_key=gateway_key,
    ),
    ModelDraft(display_name="Gateway Llama", remote_model="meta-llama/Llama-3.1-8B-Instruct",
               tags=["internal"], enabled=False),
)
for card in (gpt, gateway):
    catalog.record_test(ws, card.id, make_adapter(catalog.target_for(ws, card.id), ws.client)
                        .test_connection())

# A two-turn chat with a system prompt and per-chat settings.
first = turn(gpt, "Why is the sky blue?", system_prompt="Answer in one sentence.",
             params={"temperature": 0.2})
turn(gpt, "And why are sunsets red?", first.conversation_id,
     system_prompt="Answer in one sentence.", params={"temperature": 0.2})
# Unicode, and a long prompt.
unicode = turn(gpt, "Résumé en français, s'il vous plaît ☀️ — 日本語も 🙂")
turn(gpt, long_prompt, unicode.conversation_id)
# A server error (saved with its details), then a retry that worked.
fault(name="status", status=500, message="The server had an error while processing your request.")
failed = turn(gpt, "Tell me a joke")
assert failed.status == "error", failed
turn(gpt, "Tell me a joke", failed.conversation_id)
# A reply stopped after its first words.
events = stream_turn(ws, TurnRequest(model_id=gpt.id, prompt="Count to one hundred, slowly"))
for n, _ in enumerate(events):
    if n == 2:
        events.close()
        break
# Nothing listening: a connection error on the gateway.
down = turn(gateway, "Are you there?")
assert down.status == "error" and down.error.kind == "connection", down
# A chat with a card that is then deleted: its messages and usage keep the name.
turn(echo, "hello old model")
catalog.delete_model(ws, echo.id)
ws.close()
print("ok")
"""


def extract_release(into: Path) -> None:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", RELEASE, "core"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def main(output: Path = OUTPUT) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.servers.openai_server import OpenAITestServer

    server = OpenAITestServer(api_key=OPENAI_KEY).start()
    with tempfile.TemporaryDirectory(prefix="plugboard-0001-") as tmp:
        release, home = Path(tmp) / "release", Path(tmp) / "home"
        extract_release(release)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_")},
            "PYTHONPATH": str(release),
            "PLUGBOARD_HOME": str(home),
            "PLUGBOARD_SECRET_KEY": SECRET_KEY,
            "PLUGBOARD_MAX_RETRIES": "0",
        }
        env.pop("DATABASE_URL", None)
        try:
            subprocess.run(
                [sys.executable, "-c", GENERATE, server.url, OPENAI_KEY, GATEWAY_KEY, LONG_PROMPT],
                cwd=release,
                env=env,
                check=True,
            )
        finally:
            server.stop()
        database = home / "plugboard.db"
        conn = sqlite3.connect(database)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        counts = {
            table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            for (table,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        }
        conn.close()
        shutil.copyfile(database, output)
    print(f"{output} ({output.stat().st_size} bytes): {counts}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)
