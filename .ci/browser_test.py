#!/usr/bin/env python3
"""Browser test of the status page (run by .ci/browser-test.sh; Python standard library only).

1. Starts `orgsync serve` on a free port of 127.0.0.1 with a temporary configuration: a
   healthy SQLite link `healthy` and a webhook link `hook` whose receiver is not listening.
2. Appends entries; the page (headless Chromium, `--dump-dom`) must show `hook` suspended
   with its reason and `healthy` active with lag 0, and the stream's end offset.
3. Starts the receiver: the page must show `hook` verifying with its probe progress k/K, then
   active with lag 0; the receiver must have every entry.
4. The detail view of `hook` must list the suspension in its sync log, and a dead letter
   whose error text holds HTML must be shown as text, not parsed.
5. A second broker with auth on: without a token the page shows no data and no operator
   button, says a token is needed and offers the token field.

A screenshot of each state goes to $ARTIFACTS_DIR. Every wait polls a condition with a bound.
Every process started here is stopped by its id on exit, also on failure.
"""

import html.parser
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ORGSYNC_BIN = os.path.abspath(os.environ.get("ORGSYNC_BIN", ".build/debug/orgsync"))
CHROMIUM_BIN = os.environ.get("CHROMIUM_BIN", "chromium")
ARTIFACTS_DIR = os.environ.get("ARTIFACTS_DIR", "/tmp/orgsync-artifacts")
PROBE_THRESHOLD = 6
VERIFY_INTERVAL_MS = 2500
CHROMIUM_TIMEOUT_S = 60
STATE_TIMEOUT_S = 45
started = time.monotonic()
processes = []  # every Popen started here, stopped in stop_all()


def log(message):
    print(f"browser-test [{time.monotonic() - started:5.1f}s] {message}", flush=True)


class Failure(Exception):
    pass


def stop_all():
    for process in reversed(processes):
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)  # its own group: chromium's helpers too
            except ProcessLookupError:
                pass
    for process in reversed(processes):
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, condition, timeout_s=STATE_TIMEOUT_S, interval_s=0.2):
    """Polls condition() until it returns a true value; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    raise Failure(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


# --- the webhook receiver: down until started ------------------------------------------------

class Receiver(http.server.BaseHTTPRequestHandler):
    received = []  # entries the receiver accepted
    lock = threading.Lock()

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        batch = json.loads(self.rfile.read(length) or b"{}")
        entries = batch.get("entries", [])
        poison = [e for e in entries if e.get("key") == "poison"]
        if poison:
            # A rejection whose text is markup (the batch's first entry is the one rejected):
            # the page must show it as text.
            body = b'<img src=x data-testid="injected"><b data-testid="injected">bold</b>'
            self.send_response(422)
        else:
            with Receiver.lock:
                Receiver.received.extend(entries)
            body = b"{}"
            self.send_response(200)
        self.send_header("Content-Type", "text/html" if poison else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# --- the broker ------------------------------------------------------------------------------

def start_broker(directory, hook_port, auth="{ enabled: false }"):
    config = os.path.join(directory, "orgsync.yaml")
    os.makedirs(directory, exist_ok=True)
    with open(config, "w") as f:
        f.write(f"""
data_dir: {directory}/state
server: {{ host: 127.0.0.1, port: 0 }}
log: {{ level: info }}
auth: {auth}
streams:
  - name: events
links:
  - name: healthy
    stream: events
    adapter: sqlite
    settings: {{ path: healthy.sqlite, primary_key: org_key }}
  - name: hook
    stream: events
    adapter: webhook
    settings: {{ url: "http://127.0.0.1:{hook_port}/hook", timeout_ms: "1000" }}
    supervisor:
      probe_threshold: {PROBE_THRESHOLD}
      verify_interval_ms: {VERIFY_INTERVAL_MS}
      verify_window_ms: 60000
      backoff_base_ms: 200
      backoff_cap_ms: 1000
      retryable_attempts_max: 1
""")
    stderr = open(os.path.join(directory, "broker.log"), "w")
    process = subprocess.Popen([ORGSYNC_BIN, "serve", "--config", config], stdout=subprocess.PIPE, stderr=stderr,
                               text=True, start_new_session=True)
    processes.append(process)
    lines = []

    def read_port():
        # A thread reads stdout so that a silent broker cannot block the bounded wait.
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=read_port, daemon=True).start()
    marker = "orgsync: listening on http://127.0.0.1:"

    def port():
        if process.poll() is not None:
            raise Failure(f"the broker exited with {process.returncode}; see {directory}/broker.log")
        for line in lines:
            if line.startswith(marker):
                return int(line.strip()[len(marker):])
        return None

    return wait_for("the broker to listen", port, timeout_s=60)


def api(base, method, path, body=None, content_type="application/json"):
    request = urllib.request.Request(base + path, method=method, data=body)
    if body is not None:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def link_status(base, name):
    return api(base, "GET", "/v1/links/" + name)[1]


# --- the browser -----------------------------------------------------------------------------

def chromium(profile, *arguments):
    command = [CHROMIUM_BIN, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--virtual-time-budget=4000", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    processes.append(process)
    try:
        output, _ = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Failure(f"chromium did not finish within {CHROMIUM_TIMEOUT_S}s: {' '.join(arguments)}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        processes.remove(process)
    if process.returncode != 0:
        raise Failure(f"chromium exited with {process.returncode}: {' '.join(arguments)}")
    return output.decode("utf-8", "replace")


class DOM(html.parser.HTMLParser):
    """The rendered DOM as a list of elements (tag, attributes, text of their subtree)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements = []
        self.open = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "children": []}
        if self.open:
            self.open[-1]["children"].append(element)
        self.elements.append(element)
        if tag not in self.VOID:
            self.open.append(element)

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i]["tag"] == tag:
                del self.open[i:]
                return

    def handle_data(self, data):
        for element in self.open:
            element["text"] += data

    def find(self, **attributes):
        return [e for e in self.elements if all(e["attrs"].get(k.replace("_", "-")) == v for k, v in attributes.items())]


def descendant(element, testid):
    stack = list(element["children"])
    while stack:
        child = stack.pop(0)
        if child["attrs"].get("data-testid") == testid:
            return child
        stack.extend(child["children"])
    return None


def window(page_url):
    # The detail view is long: a taller window shows its sync log and dead letters.
    return "--window-size=1400,1500" if "#/links/" in page_url else "--window-size=1400,700"


def load(page_url, profile):
    return DOM(chromium(profile, window(page_url), "--dump-dom", page_url))


def screenshot(page_url, profile, name):
    path = os.path.join(ARTIFACTS_DIR, name)
    chromium(profile, window(page_url), f"--screenshot={path}", page_url)
    if not os.path.getsize(path):
        raise Failure(f"empty screenshot {path}")
    log(f"screenshot {path}")
    return path


def link_rows(dom):
    """{link: {"state", "lag", "probe", "last_error", "label"}} from the overview's rows."""
    rows = {}
    for row in dom.find(data_testid="link-row"):
        cell = lambda testid: (descendant(row, testid) or {"text": ""})["text"].strip()
        rows[row["attrs"].get("data-link")] = {
            "state": row["attrs"].get("data-state"), "lag": cell("link-lag"), "probe": cell("link-probe"),
            "last_error": cell("link-last-error"), "label": cell("link-state-label"), "cursor": cell("link-cursor"),
            "end": cell("link-end"),
        }
    return rows


def page_shows(page_url, profile, want):
    """Loads the page; returns its link rows if want(rows) holds, else None."""
    dom = load(page_url, profile)
    if dom.find(data_testid="connection", data_status="ok") == []:
        return None
    rows = link_rows(dom)
    return (rows, dom) if want(rows) else None


def screenshot_state(page_url, profile, name, want, what):
    """Waits until the page shows `want`, takes a screenshot, and checks the page still shows it
    afterwards: a link's states only move forward here, so the screenshot shows that state."""
    rows, dom = wait_for(what, lambda: page_shows(page_url, profile, want))
    path = screenshot(page_url, profile, name)
    if not page_shows(page_url, profile, want):
        raise Failure(f"the page left '{what}' while the screenshot was taken; {path} may not show it")
    return rows, dom, path


# --- the test --------------------------------------------------------------------------------

def main():
    os.makedirs(ARTIFACTS_DIR, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="orgsync-browser-")
    profile = os.path.join(directory, "chromium-profile")
    receiver = None
    try:
        hook_port = free_port()
        port = start_broker(directory, hook_port)
        base = f"http://127.0.0.1:{port}"
        page = base + "/"
        log(f"broker on {base}, webhook receiver (down) on 127.0.0.1:{hook_port}")

        entries = [{"org": "acme", "object": "Contact", "op": "upsert", "key": f"c{i}", "ts": "2026-11-25T00:00:00Z",
                    "fields": {"Name": f"<i>Contact {i}</i>"}} for i in range(5)]
        status, body = api(base, "POST", "/v1/streams/events/entries",
                           "\n".join(json.dumps(e) for e in entries).encode(), "application/x-ndjson")
        if status != 201 or body.get("count") != 5:
            raise Failure(f"append answered {status} {body}")

        # State 1: hook suspended with its reason, healthy active with lag 0.
        def first_state(rows):
            hook, healthy = rows.get("hook", {}), rows.get("healthy", {})
            return (hook.get("state") == "suspended" and hook.get("label") == "suspended" and hook.get("last_error")
                    and healthy.get("state") == "active" and healthy.get("lag") == "0" and healthy.get("cursor") == "5")
        rows, dom, _ = screenshot_state(page, profile, "1-suspended.png", first_state, "hook suspended, healthy active")
        # The reason is the target's error (the failed POST, then each failed probe).
        reason = rows["hook"]["last_error"]
        if not reason.startswith("connection: webhook") or f"127.0.0.1:{hook_port}" not in reason:
            raise Failure(f"the page shows the reason {reason!r}; the API says {link_status(base, 'hook').get('last_error')!r}")
        if rows["hook"]["lag"] != "5" or rows["hook"]["end"] != "5":
            raise Failure(f"hook's lag/end offset on the page: {rows['hook']}")
        streams = [s for s in dom.find(data_testid="stream-row") if s["attrs"].get("data-stream") == "events"]
        if not streams or (descendant(streams[0], "stream-end") or {}).get("text") != "5":
            raise Failure("the stream row of events does not show end offset 5")
        log(f"suspended: hook shows {reason!r}; healthy active, lag 0")

        detail, dom, _ = screenshot_state(
            page + "#/links/hook", profile, "2-detail-suspended.png",
            lambda rows: True, "the detail view")
        events = [e["attrs"].get("data-event") for e in dom.find(data_testid="sync-log-row")]
        if "suspended" not in events:
            raise Failure(f"the sync log of hook shows no suspension: {events}")
        if not dom.find(data_testid="link-detail", data_state="suspended"):
            raise Failure("the detail view does not show hook as suspended")
        log(f"detail: sync log events {events}")

        # State 2: the receiver is back: verifying with its probe progress, then active.
        receiver = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        log("receiver started")
        verifying = lambda rows: rows.get("hook", {}).get("state") == "verifying"
        rows, _, _ = screenshot_state(page, profile, "3-verifying.png", verifying, "hook verifying")
        probe = rows["hook"]["probe"]
        k, _, threshold = probe.partition("/")
        if threshold != str(PROBE_THRESHOLD) or not k.isdigit() or int(k) >= PROBE_THRESHOLD:
            raise Failure(f"the probe progress shown while verifying is {probe!r}")
        log(f"verifying: probes {probe}")

        active = lambda rows: rows.get("hook", {}).get("state") == "active" and rows["hook"].get("lag") == "0"
        screenshot_state(page, profile, "4-active.png", active, "hook active with lag 0")
        with Receiver.lock:
            got = sorted(e["offset"] for e in Receiver.received)
        if got[:5] != [0, 1, 2, 3, 4]:
            raise Failure(f"the receiver got offsets {got}")
        log("active: hook caught up, the receiver has every entry")

        # A rejected entry whose error text is markup is rendered as text in the dead letters.
        poison = {"org": "acme", "object": "Contact", "op": "upsert", "key": "poison", "ts": "2026-11-25T00:00:00Z"}
        api(base, "POST", "/v1/streams/events/entries", json.dumps(poison).encode())
        wait_for("the dead letter", lambda: link_status(base, "hook").get("dead_letters_failed") == 1)

        def dead_letter_shown(_):
            return True
        _, dom, _ = screenshot_state(page + "#/links/hook", profile, "5-dead-letter.png", dead_letter_shown, "the dead letter")
        shown = [e["text"] for e in dom.find(data_testid="dead-letter-error")]
        if not any('<b data-testid="injected">' in text for text in shown):
            raise Failure(f"the dead letter's error is not shown as text: {shown}")
        if dom.find(data_testid="injected"):
            raise Failure("markup from an error text was parsed into the page")
        log("dead letter: its markup is shown as text, not parsed")

        # With auth on and no token the page reads nothing, says why, offers the token field,
        # and shows no operator button.
        os.environ["BROWSER_TEST_ADMIN_TOKEN"] = secrets.token_hex(16)  # the broker's; the page never gets it
        locked = start_broker(os.path.join(directory, "locked"), free_port(),
                              auth="{ enabled: true, tokens: [ { name: a, role: admin, token_env: BROWSER_TEST_ADMIN_TOKEN } ] }")
        dom = wait_for("the page to ask for a token", lambda: (lambda d: d if d.find(data_testid="connection", data_status="unauthorized") else None)(
            load(f"http://127.0.0.1:{locked}/", profile)))
        form = dom.find(data_testid="token-form")
        if not form or "hidden" in form[0]["attrs"] or not dom.find(data_testid="role", data_role="none"):
            raise Failure("with auth on and no token the page does not offer the token field")
        if dom.find(data_testid="link-row") or dom.find(data_testid="link-suspend"):
            raise Failure("with auth on and no token the page shows links or operator buttons")
        screenshot(f"http://127.0.0.1:{locked}/", profile, "6-auth-no-token.png")
        log("auth on, no token: the page asks for one and shows nothing else")
        log("passed")
    finally:
        if receiver is not None:
            receiver.shutdown()
            receiver.server_close()
        stop_all()
        if os.environ.get("KEEP_TEMP") != "1":
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    def interrupted(number, frame):
        raise SystemExit(f"browser-test: signal {number}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        main()
    except Failure as failure:
        print(f"browser-test: FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
