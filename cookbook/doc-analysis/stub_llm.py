"""A tiny OpenAI-compatible chat server that answers deterministically.

Start it, then point ``/builtin/openai`` at it (``flow.yaml`` does by default)::

    python cookbook/doc-analysis/stub_llm.py [--port 8765]

``POST /v1/chat/completions`` answers in OpenAI's format. The reply's content is a
JSON object computed from the last user message (the text after its first blank
line, i.e. the document without its heading):

    {"summary": <the first 12 words>, "word_count": <words>,
     "sentiment": "positive" | "negative" | "neutral",
     "keywords": [<the 3 most frequent words, longest first>]}

so a flow run against the stub always gives the same result. A message containing
``[[stub:error:503]]`` (any status from 400 to 599) gets that HTTP status instead,
to show how a flow handles a failing endpoint. ``GET /v1/models`` lists one model.

Standard library only; it binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SUMMARY_WORDS = 12
_POSITIVE_TEXT = (
    "excellent great good love loved happy improved improvement success successful "
    "delighted recommend fast reliable win wins praised growth record"
)
POSITIVE = frozenset(_POSITIVE_TEXT.split())
_NEGATIVE_TEXT = (
    "bad poor broken slow late delayed failure failed angry disappointed refund outage "
    "worse worst problem problems complaint decline lost"
)
NEGATIVE = frozenset(_NEGATIVE_TEXT.split())
_STOPWORDS_TEXT = (
    "a an and are as at be been but by for from had has have in is it its of on or our "
    "that the their this to was we were will with"
)
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_ERROR = re.compile(r"\[\[stub:error:([45]\d\d)\]\]")


def analyse(text: str) -> dict[str, Any]:
    """The stub's "analysis" of a document: first words, word count, sentiment, keywords.

    Example:
        >>> analyse("Great service, fast delivery. Great!")["sentiment"]
        'positive'
    """
    words = re.findall(r"[A-Za-z0-9'-]+", text)
    lower = [w.lower() for w in words]
    score = sum(w in POSITIVE for w in lower) - sum(w in NEGATIVE for w in lower)
    sentiment = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    counts = Counter(w for w in lower if w not in STOPWORDS and len(w) > 2)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], -len(kv[0]), kv[0]))
    keywords = [word for word, _ in ranked[:3]]
    summary = " ".join(text.split()[:SUMMARY_WORDS])
    if len(text.split()) > SUMMARY_WORDS:
        summary += " ..."
    return {
        "summary": summary,
        "word_count": len(words),
        "sentiment": sentiment,
        "keywords": keywords,
    }


def complete(body: Any) -> tuple[int, dict[str, Any]]:
    """The status and JSON reply for one ``/chat/completions`` request body."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return 400, _error("the body must be a JSON object with a 'messages' list")
    if not isinstance(body.get("model"), str):
        return 400, _error("'model' is required")
    users = [
        m.get("content")
        for m in body["messages"]
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    ]
    if not users:
        return 400, _error("there is no user message with string content")
    message = users[-1]
    failure = _ERROR.search(message)
    if failure:
        status = int(failure[1])
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return status, _error(f"stub: failing with HTTP {status} as asked", kind)
    _, blank, rest = message.partition("\n\n")
    content = json.dumps(analyse(rest if blank else message), ensure_ascii=False)
    prompt_words = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    digest = hashlib.sha256(message.encode("utf-8")).hexdigest()[:12]
    return 200, {
        "id": f"chatcmpl-stub-{digest}",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_words,
            "completion_tokens": len(content.split()),
            "total_tokens": prompt_words + len(content.split()),
        },
    }


def _error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}


class Handler(BaseHTTPRequestHandler):
    server_version = "stub-llm/1"

    def do_POST(self) -> None:
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, _error(f"no route {self.path}"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._send(400, _error("the body is not JSON"))
            return
        self._send(*complete(body))

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
        else:
            self._send(404, _error(f"no route {self.path}"))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:  # type: ignore[attr-defined]
            sys.stderr.write(f"stub_llm: {format % args}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.quiet = args.quiet  # type: ignore[attr-defined]
    host, port = server.server_address[:2]
    print(f"stub LLM listening on http://{host}:{port}/v1 (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
