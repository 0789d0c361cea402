"""ClickHouse's HTTP interface served by chdb, so tests can run
`services.metering.clickhouse.Remote` (clickhouse-connect) against the real
ClickHouse engine.

`serve(path)` starts `python -m tests.clickhouse_http PATH` and yields its
URL. It is a separate process because chdb allows one data path per process
and the test session's own chdb already holds one; like a real server, it
shares nothing with the tests. It stops when its stdin closes.

It implements the part of the protocol clickhouse-connect uses: POST with the
statement in the body (an INSERT carries its data in the same body), or with
`query` and `param_*` as multipart form fields when the bound parameters are
too long for a URL; `param_<name>` URL parameters for server-side parameters;
every other URL parameter is a setting, except the transport-only ones the
client sends that have no meaning here. The output format is the statement's
FORMAT clause, else TabSeparated. An error answers 500 with
X-ClickHouse-Exception-Code and the message. Each request runs in its own
chdb session, so settings do not leak between requests.

Left out because Remote's calls do not need them: chunked request bodies
(the client sends a Content-Length for a str or bytes body), the `database`
and `default_format` parameters, compression, and the informational
response headers (X-ClickHouse-Summary, -Timezone, -Format, ...), which the
client tolerates missing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

REPO = Path(__file__).resolve().parents[1]

# Sent by clickhouse-connect, meaningless for a buffered, session-less server:
# the client's query id, "buffer the whole result" (always true here), and the
# Native protocol version probe (answered as by a server without it).
TRANSPORT_ONLY = {"query_id", "wait_end_of_query", "client_protocol_version"}
ERROR_CODE = re.compile(r"Code: (\d+)\.")


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
        for part in message.iter_parts()
    }


def quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, chdb_path: str):
        super().__init__(("127.0.0.1", 0), Handler)
        self.chdb_path = chdb_path
        self.lock = threading.Lock()  # chdb calls are serialized, as in `Embedded`


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_POST(self) -> None:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            params.update(form_fields(content_type, body))
            body = b""
        sql = "\n".join(part for part in (params.pop("query", ""), body.decode()) if part)
        bind = {name.removeprefix("param_"): v for name, v in params.items() if name.startswith("param_")}
        settings = {k: v for k, v in params.items() if not k.startswith("param_") and k not in TRANSPORT_ONLY}
        try:
            output = self.run(sql, bind, settings)
        except Exception as error:
            message = str(error).encode()
            self.send_response(500)
            if code := ERROR_CODE.search(str(error)):
                self.send_header("X-ClickHouse-Exception-Code", code.group(1))
            self.reply(message)
        else:
            self.send_response(200)
            self.reply(output)

    def run(self, sql: str, bind: dict[str, str], settings: dict[str, str]) -> bytes:
        from chdb import session

        with self.server.lock, session.Session(self.server.chdb_path) as s:
            for name, value in settings.items():
                s.query(f"SET {name} = {quoted(value)}")
            result = s.query(sql, "TabSeparated", params=bind) if bind else s.query(sql, "TabSeparated")
            return result.bytes()

    def reply(self, body: bytes) -> None:
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        return None  # quiet: one line per query would flood the test output


def main(path: str) -> None:
    from chdb import session

    engine = session.Session(path)  # holds the engine open between requests
    server = Server(path)

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        server.shutdown()

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()
    server.server_close()
    engine.close()


@contextmanager
def serve(path: Path, config: Path | None = None) -> Iterator[str]:
    """Runs the server on `path` and yields its URL, http://127.0.0.1:<port>;
    with `config`, a ClickHouse configuration file (for example one defining
    clusters in `remote_servers`)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.clickhouse_http", f"{path}?config-file={config}" if config else str(path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = process.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the chdb HTTP server did not start (exit code {process.wait(10)})")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stdin.close()
        process.wait(10)


if __name__ == "__main__":
    main(sys.argv[1])
