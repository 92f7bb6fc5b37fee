#!/usr/bin/env python3
"""Browser test of the status page, driven as an operator would (run by .ci/browser-test.sh).

Selenium drives Debian's chromium through Debian's chromedriver (both local binaries: Selenium
Manager is never asked for anything). The page is read from the live DOM and used through its
own controls: links clicked, buttons pressed, a token typed.

1. Starts `orgsync serve` on a free port of 127.0.0.1 with a temporary configuration: a
   healthy SQLite link `healthy` and a webhook link `hook` whose receiver is not listening.
2. Appends entries; the overview must show `hook` suspended with its reason and `healthy`
   active with lag 0, and the stream's end offset. axe-core checks the overview.
3. Opening `hook` (its link in the table): the detail view lists the suspension in its sync
   log. axe-core checks the detail view.
4. Starts the receiver: the overview must show `hook` verifying with its probe progress k/K,
   then active with lag 0; the receiver must have every entry.
5. Suspend button (confirmed in the dialog): `hook` shows paused, with Resume and no Suspend;
   Resume button: verifying k/K, then active again.
6. A rejected entry whose error text holds HTML: the detail view shows it as text, not parsed.
7. 25 more rejected entries: the sync log needs two pages; Older shows the next older records
   (contiguous sequence numbers), Newer brings the first page back.
8. An entry the receiver rejects, then accepts: its dead letter's Retry button first fails
   (the page says so, the letter stays failed), then, once the receiver accepts it, resolves
   it; the sync log shows the resolution and the receiver has the entry.
9. A PostgreSQL capture source `crm` (on the throwaway server of .ci/postgres.sh, whose
   ORGSYNC_TEST_PG_* must be set): after a row is inserted its overview row shows it active
   with a position, its lag in bytes and in time and one appended entry; its Suspend button
   (confirmed) pauses it (last event `paused`, a Resume button); Resume brings it back to
   active (last event `resumed`).
10. A one-member cluster on a nats-server (the standalone broker's page has no Cluster
   section): its page's Cluster section shows member `solo` live running one link and member
   `b` absent with its pinned link; link `leased` owned by solo under an owner epoch ≥ 1, link
   `pinned` on b without one; the links table lists only `leased`. axe-core checks it.
11. A second broker with auth on: without a token the page shows no data and no operator
   button, says a token is needed and offers the token field; typing the admin token there
   shows the links with their operator buttons. The token is made for this run, passed through
   the environment and never printed.

axe-core runs on the overview and the detail view in several states (and on the token page);
any violation of impact "critical" or "serious" fails the test, each printed with its rule,
impact, nodes and help. A full-height screenshot of each state goes to $ARTIFACTS_DIR.
Every wait polls a condition with a bound. Every process started here (brokers, chromedriver
and its browser) is stopped by its id on exit, also on failure.
"""

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
import urllib.request

from axe_selenium_python import Axe
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

ORGSYNC_BIN = os.path.abspath(os.environ.get("ORGSYNC_BIN", ".build/debug/orgsync"))
CHROMIUM_BIN = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER_BIN = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
ARTIFACTS_DIR = os.environ.get("ARTIFACTS_DIR", "/tmp/orgsync-artifacts")
PROBE_THRESHOLD = 6
VERIFY_INTERVAL_MS = 2500
PAGE_LIMIT = 20          # rows per page of the sync log and the dead letters (status.js)
BULK_REJECTED = 25       # rejected entries: more sync log records than one page holds
STATE_TIMEOUT_S = 60     # generous: a loaded 2-core machine
WINDOW_WIDTH = 1400
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
                os.killpg(process.pid, signal.SIGTERM)  # its own group: chromedriver's browser too
            except ProcessLookupError:
                pass
    for process in reversed(processes):
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, condition, timeout_s=STATE_TIMEOUT_S, interval_s=0.2):
    """Polls condition() until it returns a true value; fails after timeout_s, saying what it
    last saw."""
    last = [None]

    def check(_):
        last[0] = condition()
        return last[0]
    try:
        return WebDriverWait(None, timeout_s, poll_frequency=interval_s,
                             ignored_exceptions=(StaleElementReferenceException,)).until(check)
    except TimeoutException:
        raise Failure(f"timed out after {timeout_s}s waiting for {what} (last seen: {last[0]!r})") from None


# --- the webhook receiver: down until started ------------------------------------------------

class Receiver(http.server.BaseHTTPRequestHandler):
    """Accepts a batch whole (200) or rejects its first entry that must be rejected (422):
    `poison` (with markup as the error text), `bulk-*`, and `retry-*` while reject_retry."""
    received = []  # entries of the accepted batches
    reject_retry = True
    lock = threading.Lock()

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    @staticmethod
    def rejects(entry):
        key = str(entry.get("key", ""))
        return key == "poison" or key.startswith("bulk-") or (key.startswith("retry-") and Receiver.reject_retry)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        batch = json.loads(self.rfile.read(length) or b"{}")
        entries = batch.get("entries", [])
        with Receiver.lock:
            rejected = next((e for e in entries if Receiver.rejects(e)), None)
            if rejected is None:
                Receiver.received.extend(entries)
        if rejected is not None and rejected.get("key") == "poison" and rejected is entries[0]:
            # A rejection whose text is markup (the batch's first entry is the one rejected):
            # the page must show it as text.
            body, content_type = b'<img src=x data-testid="injected"><b data-testid="injected">bold</b>', "text/html"
        elif rejected is not None:
            body = json.dumps({"rejected_offset": rejected["offset"], "error": f"{rejected['key']} refused"}).encode()
            content_type = "application/json"
        else:
            body, content_type = b"{}", "application/json"
        self.send_response(422 if rejected is not None else 200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def received_keys():
    with Receiver.lock:
        return [e.get("key") for e in Receiver.received]


# --- the broker ------------------------------------------------------------------------------

# --- the capture source's database: the throwaway PostgreSQL of .ci/postgres.sh ---------------

SOURCE_TAG = f"browser_crm_{os.getpid()}"  # its table, slot and publication


def pg_env():
    names = ("ORGSYNC_TEST_PG_HOST", "ORGSYNC_TEST_PG_PORT", "ORGSYNC_TEST_PG_USER", "ORGSYNC_TEST_PG_DB")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise Failure(f"the capture source needs the throwaway PostgreSQL (source .ci/postgres.sh first): {missing} not set")
    return {n: os.environ[n] for n in names}


def psql(sql):
    env = pg_env()
    psql_bin = os.path.join(os.environ.get("ORGSYNC_PG_BIN", "/usr/lib/postgresql/15/bin"), "psql")
    result = subprocess.run(
        [psql_bin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", env["ORGSYNC_TEST_PG_HOST"], "-p", env["ORGSYNC_TEST_PG_PORT"],
         "-U", env["ORGSYNC_TEST_PG_USER"], "-d", env["ORGSYNC_TEST_PG_DB"], "-c", sql],
        env={**os.environ, "PGPASSWORD": os.environ.get("ORGSYNC_TEST_PG_PASSWORD", "")},
        capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise Failure(f"psql failed ({result.returncode}): {result.stderr.strip()}")


def source_config():
    env = pg_env()
    return f"""
sources:
  - name: crm
    kind: postgres
    stream: events
    settings: {{ host: "{env['ORGSYNC_TEST_PG_HOST']}", port: {env['ORGSYNC_TEST_PG_PORT']}, user: "{env['ORGSYNC_TEST_PG_USER']}",
                password_env: ORGSYNC_TEST_PG_PASSWORD, database: "{env['ORGSYNC_TEST_PG_DB']}", tables: "{SOURCE_TAG}",
                slot: "{SOURCE_TAG}", publication: "{SOURCE_TAG}", sslmode: disable, poll_ms: "100" }}
    supervisor: {{ probe_threshold: 2, verify_interval_ms: 500, verify_window_ms: 60000 }}
"""


def start_broker(directory, hook_port, auth="{ enabled: false }", sources=""):
    return start_broker_with(directory, f"""
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
""" + sources)


def start_broker_with(directory, configuration):
    """Starts `orgsync serve` on `configuration` (YAML) in `directory`; returns its port."""
    config = os.path.join(directory, "orgsync.yaml")
    os.makedirs(directory, exist_ok=True)
    with open(config, "w") as f:
        f.write(configuration)
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

    return wait_for("the broker to listen", port)


def start_nats(directory):
    """A nats-server with JetStream on a free port of 127.0.0.1; returns its port."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(binary, os.X_OK):
        raise Failure(f"nats-server not found ({binary}); apt-get install nats-server")
    port = free_port()
    os.makedirs(directory, exist_ok=True)
    log_file = open(os.path.join(directory, "nats.log"), "w")
    process = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", directory],
                               stdout=log_file, stderr=log_file, start_new_session=True)
    processes.append(process)

    def ready():
        if process.poll() is not None:
            raise Failure(f"nats-server exited with {process.returncode}; see {directory}/nats.log")
        with open(os.path.join(directory, "nats.log")) as f:
            return "Server is ready" in f.read()
    wait_for("nats-server to be ready", ready)
    return port


def start_cluster_member(directory, nats_port):
    """A one-member cluster `solo` on that nats-server: link `leased` (SQLite, leased by solo),
    link `pinned` (pinned to member `b`, which never starts) and capture source `capture` (leased
    by solo; its database does not answer, so it stays suspended — where it runs is what shows)."""
    return start_broker_with(directory, f"""
data_dir: {directory}/state
server: {{ host: 127.0.0.1, port: 0 }}
log: {{ level: info }}
auth: {{ enabled: false }}
cluster: {{ node: solo, nats_urls: ["nats://127.0.0.1:{nats_port}"], replicas: 1, lease_ms: 3000 }}
streams:
  - name: events
links:
  - name: leased
    stream: events
    adapter: sqlite
    settings: {{ path: leased.sqlite, primary_key: org_key }}
  - name: pinned
    node: b
    stream: events
    adapter: sqlite
    settings: {{ path: pinned.sqlite, primary_key: org_key }}
sources:
  - name: capture
    kind: postgres
    stream: events
    settings: {{ host: 127.0.0.1, port: 1, user: u, database: d, tables: t }}
""")


def api(base, method, path, body=None, content_type="application/json"):
    request = urllib.request.Request(base + path, method=method, data=body)
    if body is not None:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def append(base, entries):
    """Appends entries (a producer's work, not the page's); returns the first offset."""
    status, body = api(base, "POST", "/v1/streams/events/entries",
                       "\n".join(json.dumps(e) for e in entries).encode(), "application/x-ndjson")
    if status != 201 or body.get("count") != len(entries):
        raise Failure(f"append of {len(entries)} entries answered {status} {body}")
    return body["first_offset"]


def entry(key, **fields):
    value = {"org": "acme", "object": "Contact", "op": "upsert", "key": key, "ts": "2026-11-25T00:00:00Z"}
    if fields:
        value["fields"] = fields
    return value


# --- the browser -----------------------------------------------------------------------------

def start_browser(directory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM_BIN
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={directory}/chromium-profile", f"--window-size={WINDOW_WIDTH},900"):
        options.add_argument(argument)
    # The local chromedriver, never one Selenium Manager would fetch; its own process group so
    # that stopping it stops the browser it started too.
    service = Service(executable_path=CHROMEDRIVER_BIN, log_output=os.path.join(directory, "chromedriver.log"),
                      popen_kw={"start_new_session": True})
    try:
        driver = webdriver.Chrome(service=service, options=options)
    finally:
        if getattr(service, "process", None) is not None:
            processes.append(service.process)
    driver.set_page_load_timeout(STATE_TIMEOUT_S)
    driver.set_script_timeout(STATE_TIMEOUT_S)
    return driver


class Page:
    """The status page in the browser, read from its DOM and used through its controls."""

    OVERVIEW = """
        const rows = {};
        for (const tr of document.querySelectorAll('[data-testid="link-row"]')) {
          const cell = (id) => { const n = tr.querySelector('[data-testid="' + id + '"]'); return n ? n.textContent.trim() : ""; };
          rows[tr.dataset.link] = {
            state: tr.dataset.state, label: cell("link-state-label"), lag: cell("link-lag"), cursor: cell("link-cursor"),
            end: cell("link-end"), probe: cell("link-probe"), last_error: cell("link-last-error"),
            buttons: Array.from(tr.querySelectorAll('[data-testid="link-actions"] button')).map((b) => b.dataset.testid)};
        }
        const streams = {};
        for (const tr of document.querySelectorAll('[data-testid="stream-row"]')) {
          streams[tr.dataset.stream] = { end: tr.querySelector('[data-testid="stream-end"]').textContent };
        }
        return { view: "overview", shown: !document.getElementById("overview").hidden, rows: rows, streams: streams };
    """

    SOURCES = """
        const rows = {};
        for (const tr of document.querySelectorAll('[data-testid="source-row"]')) {
          const cell = (id) => { const n = tr.querySelector('[data-testid="' + id + '"]'); return n ? n.textContent.trim() : ""; };
          rows[tr.dataset.source] = {
            state: tr.dataset.state, label: cell("source-state-label"), stream: cell("source-stream"), position: cell("source-position"),
            lag_bytes: cell("source-lag-bytes"), lag_time: cell("source-lag-time"), appended: cell("source-appended"),
            last_error: cell("source-last-error"), last_event: tr.querySelector('[data-testid="source-last-event"]').dataset.event,
            buttons: Array.from(tr.querySelectorAll('[data-testid="source-actions"] button')).map((b) => b.dataset.testid)};
        }
        return { shown: !document.getElementById("overview").hidden, rows: rows };
    """

    DETAIL = """
        const detail = document.querySelector('[data-testid="link-detail"]');
        const facts = {};
        for (const dd of detail.querySelectorAll("#detail-facts dd")) { facts[dd.dataset.testid] = dd.textContent; }
        return {
          view: "detail", shown: !detail.hidden, link: detail.dataset.link, state: detail.dataset.state || "",
          name: document.querySelector('[data-testid="detail-name"]').textContent, facts: facts,
          sync: Array.from(document.querySelectorAll('[data-testid="sync-log-row"]')).map((r) => (
            { event: r.dataset.event, sequence: Number(r.dataset.sequence),
              reason: r.querySelector('[data-testid="sync-log-reason"]').textContent })),
          older: !document.querySelector('[data-testid="sync-log-older"]').disabled,
          newer: !document.querySelector('[data-testid="sync-log-newer"]').disabled,
          dead: Array.from(document.querySelectorAll('[data-testid="dead-letter-row"]')).map((r) => (
            { offset: Number(r.dataset.offset), status: r.dataset.status,
              error: r.querySelector('[data-testid="dead-letter-error"]').textContent,
              retry: r.querySelector('[data-testid="dead-letter-retry"]') !== null })),
          injected: document.querySelectorAll('[data-testid="injected"]').length,
          actions: Array.from(document.querySelectorAll('[data-testid="detail-actions"] button')).map((b) => b.dataset.testid)};
    """

    CLUSTER = """
        const section = document.querySelector('[data-testid="cluster"]');
        const cell = (tr, id) => tr.querySelector('[data-testid="' + id + '"]').textContent.trim();
        return {
          shown: !section.hidden, node: document.querySelector('[data-testid="cluster-node"]').textContent,
          members: Object.fromEntries(Array.from(document.querySelectorAll('[data-testid="cluster-member-row"]')).map((tr) => [
            tr.dataset.member, { health: tr.querySelector('[data-testid="cluster-member-health"]').dataset.health,
                                 links: cell(tr, "cluster-member-links") }])),
          links: Object.fromEntries(Array.from(document.querySelectorAll('[data-testid="cluster-link-row"]')).map((tr) => [
            tr.dataset.link, { placement: cell(tr, "cluster-link-placement"), owner: cell(tr, "cluster-link-owner"),
                               epoch: cell(tr, "cluster-link-epoch") }])),
          sourcesShown: !document.getElementById("cluster-sources-block").hidden,
          sources: Object.fromEntries(Array.from(document.querySelectorAll('[data-testid="cluster-source-row"]')).map((tr) => [
            tr.dataset.source, { placement: cell(tr, "cluster-source-placement"), owner: cell(tr, "cluster-source-owner"),
                                 epoch: cell(tr, "cluster-source-epoch") }]))};
    """

    COMMON = """
        const c = document.querySelector('[data-testid="connection"]');
        const m = document.querySelector('[data-testid="message"]');
        const r = document.querySelector('[data-testid="role"]');
        return { connection: c.dataset.status, polls: Number(document.querySelector('[data-testid="updated"]').dataset.pollCount),
                 role: r.dataset.role, message: m.hidden ? "" : m.textContent, message_kind: m.dataset.kind || "" };
    """

    def __init__(self, driver, url):
        self.driver = driver
        self.url = url

    def open(self):
        self.driver.get(self.url)
        return self

    def common(self):
        return self.driver.execute_script(self.COMMON)

    def overview(self):
        """The overview's rows once the page is connected and shows the overview, else None."""
        common = self.common()
        state = self.driver.execute_script(self.OVERVIEW)
        return state if common["connection"] == "ok" and state["shown"] else None

    def detail(self):
        common = self.common()
        state = self.driver.execute_script(self.DETAIL)
        return state if common["connection"] == "ok" and state["shown"] else None

    def wait_overview(self, what, want):
        """Waits until the overview shows `want(rows)`; returns its state."""
        return wait_for(what, lambda: (lambda s: s if s is not None and want(s["rows"]) else None)(self.overview()))

    def wait_sources(self, what, want):
        """Waits until the overview's sources table shows `want(rows)`; returns the rows."""
        def check():
            state = self.driver.execute_script(self.SOURCES)
            return state["rows"] if self.common()["connection"] == "ok" and state["shown"] and want(state["rows"]) else None
        return wait_for(what, check)

    def wait_detail(self, what, want):
        return wait_for(what, lambda: (lambda s: s if s is not None and want(s) else None)(self.detail()))

    def fresh(self):
        """Waits for two more completed polls: whatever the page shows after that it read after
        the caller's last action (a poll under way then finishes first)."""
        before = self.common()["polls"]
        wait_for("the page to poll twice", lambda: self.common()["polls"] >= before + 2)

    def element(self, css, what):
        return wait_for(what, lambda: (lambda found: found[0] if found and found[0].is_displayed() else None)(
            self.driver.find_elements(By.CSS_SELECTOR, css)))

    def click(self, css, what):
        """Clicks a visible, enabled element as a person would (a real click, not a script)."""
        def attempt():
            found = self.driver.find_elements(By.CSS_SELECTOR, css)
            if not found or not found[0].is_displayed() or not found[0].is_enabled():
                return None
            found[0].click()
            return True
        wait_for(what, attempt)
        log(f"clicked {what}")

    def open_link(self, name):
        self.fresh()
        self.click(f'[data-testid="link-row"][data-link="{name}"] [data-testid="link-open"]', f"the link {name}")
        wait_for(f"the detail view of {name}", lambda: self.driver.execute_script(self.DETAIL)["link"] == name)
        self.fresh()  # the detail view's tables hold what an earlier visit showed until a poll

    def back_to_overview(self):
        self.click('[data-testid="link-detail"] a[href="#/"]', "← all links")
        self.fresh()

    def screenshot(self, name):
        """Resizes the window to the page's full height, then takes a screenshot."""
        # Small first: a window left tall by a longer page would make the page that tall too.
        self.driver.set_window_size(WINDOW_WIDTH, 600)
        wait_for("the window to shrink", lambda: self.driver.execute_script("return window.innerHeight <= 600"),
                 timeout_s=15)
        height = self.driver.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
        chrome = self.driver.execute_script("return window.outerHeight - window.innerHeight")
        self.driver.set_window_size(WINDOW_WIDTH, max(600, height + max(0, chrome)))
        wait_for("the window to show the whole page", lambda: self.driver.execute_script(
            "return window.innerHeight >= document.documentElement.scrollHeight"), timeout_s=15)
        path = os.path.join(ARTIFACTS_DIR, name)
        if not self.driver.save_screenshot(path) or not os.path.getsize(path):
            raise Failure(f"no screenshot {path}")
        log(f"screenshot {path}")
        return path


def axe_check(page, name):
    """Runs axe-core on the page as it is; fails on any critical or serious violation."""
    axe = Axe(page.driver)
    axe.inject()
    # axe-core 3.1.1 (the one axe-selenium-python 2.1.6 bundles; 3.x of the package needs Python
    # 3.12) takes autocomplete="off" on a password field for an inappropriate value: its
    # autocomplete-appropriate check knows no state terms (axe-core issue 1109, fixed in 3.1.2;
    # HTML allows "off" on any input). Teach it exactly that case, nothing else.
    page.driver.execute_script(
        'axe.configure({checks: [{id: "autocomplete-appropriate", options: {off: ["password"], on: ["password"]}}]})')
    results = axe.run()
    with open(os.path.join(ARTIFACTS_DIR, f"axe-{name}.json"), "w") as f:
        json.dump(results, f, indent=1)
    violations = results.get("violations", [])
    blocking = [v for v in violations if v.get("impact") in ("critical", "serious")]
    others = sorted({f"{v['id']} ({v.get('impact')})" for v in violations if v not in blocking})
    for v in blocking:
        targets = ", ".join(" ".join(map(str, n.get("target", []))) for n in v.get("nodes", []))
        print(f"browser-test: axe {name}: {v['id']} [{v['impact']}] {v.get('help')} ({v.get('helpUrl')})\n"
              f"    nodes: {targets}", file=sys.stderr, flush=True)
    if blocking:
        raise Failure(f"axe-core found {len(blocking)} critical or serious accessibility violation(s) on the {name} view "
                      f"(listed above; full results in {ARTIFACTS_DIR}/axe-{name}.json)")
    log(f"axe {name}: {len(results.get('passes', []))} rules pass, no critical or serious violation"
        + (f"; minor/moderate: {', '.join(others)}" if others else ""))


def accept_confirmation(driver, what):
    """Accepts the page's confirmation dialog, as a person pressing OK."""
    try:
        alert = WebDriverWait(driver, STATE_TIMEOUT_S).until(expected_conditions.alert_is_present())
    except TimeoutException:
        raise Failure(f"no confirmation dialog for {what}") from None
    log(f"dialog: {alert.text!r}: OK")
    alert.accept()


# --- the test --------------------------------------------------------------------------------

def main():
    os.makedirs(ARTIFACTS_DIR, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="orgsync-browser-")
    receiver = None
    driver = None
    try:
        hook_port = free_port()
        psql(f"CREATE TABLE {SOURCE_TAG} (id int PRIMARY KEY, name text)")
        port = start_broker(os.path.join(directory, "open"), hook_port, sources=source_config())
        base = f"http://127.0.0.1:{port}"
        log(f"broker on {base}, webhook receiver (down) on 127.0.0.1:{hook_port}")
        driver = start_browser(directory)
        log(f"browser: {driver.capabilities.get('browserName')} {driver.capabilities.get('browserVersion')}")

        append(base, [entry(f"c{i}", Name=f"<i>Contact {i}</i>") for i in range(5)])
        page = Page(driver, base + "/").open()

        # --- hook suspended with its reason, healthy active with lag 0 ---------------------------
        def first_state(rows):
            hook, healthy = rows.get("hook", {}), rows.get("healthy", {})
            return (hook.get("state") == "suspended" and hook.get("label") == "suspended" and hook.get("last_error")
                    and healthy.get("state") == "active" and healthy.get("lag") == "0" and healthy.get("cursor") == "5")
        state = page.wait_overview("hook suspended, healthy active", first_state)
        rows = state["rows"]
        reason = rows["hook"]["last_error"]  # the target's error (the failed POST, then each failed probe)
        if not reason.startswith("connection: webhook") or f"127.0.0.1:{hook_port}" not in reason:
            raise Failure(f"the page shows the reason {reason!r}")
        if rows["hook"]["lag"] != "5" or rows["hook"]["end"] != "5":
            raise Failure(f"hook's lag/end offset on the page: {rows['hook']}")
        if state["streams"].get("events", {}).get("end") != "5":
            raise Failure(f"the stream row of events does not show end offset 5: {state['streams']}")
        page.screenshot("01-suspended.png")
        axe_check(page, "overview")
        log(f"suspended: hook shows {reason!r}; healthy active, lag 0")

        # --- the detail view, opened from the overview ---------------------------------------
        page.open_link("hook")
        detail = page.wait_detail("hook's detail view, suspended, with its sync log",
                                  lambda d: d["state"] == "suspended" and d["sync"])
        events = [r["event"] for r in detail["sync"]]
        if "suspended" not in events:
            raise Failure(f"the sync log of hook shows no suspension: {events}")
        if detail["name"] != "hook":
            raise Failure(f"the detail view is headed {detail['name']!r}")
        page.screenshot("02-detail-suspended.png")
        axe_check(page, "detail")
        log(f"detail: sync log events {events}")
        page.back_to_overview()

        # --- the receiver is back: verifying with its probe progress, then active ------------
        receiver = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        log("receiver started")

        def verifying_shown(name):
            state = page.wait_overview(f"{name} verifying", lambda rows: rows.get("hook", {}).get("state") == "verifying")
            probe = state["rows"]["hook"]["probe"]
            k, _, threshold = probe.partition("/")
            if threshold != str(PROBE_THRESHOLD) or not k.isdigit() or int(k) >= PROBE_THRESHOLD:
                raise Failure(f"the probe progress shown while verifying is {probe!r}")
            path = page.screenshot(name)
            axe_check(page, name.removesuffix(".png"))  # the verifying badge is only there now
            # A link's state only moves forward here: still verifying after the screenshot means
            # the screenshot shows it.
            if (page.overview() or {}).get("rows", {}).get("hook", {}).get("state") != "verifying":
                raise Failure(f"hook left verifying while the screenshot was taken; {path} may not show it")
            return probe

        log(f"verifying: probes {verifying_shown('03-verifying.png')}")
        active = lambda rows: rows.get("hook", {}).get("state") == "active" and rows["hook"].get("lag") == "0"
        page.wait_overview("hook active with lag 0", active)
        page.screenshot("04-active.png")
        if received_keys()[:5] != [f"c{i}" for i in range(5)]:
            raise Failure(f"the receiver got {received_keys()}")
        log("active: hook caught up, the receiver has every entry")

        # --- suspend (pause) with its button, resume with its button -------------------------
        page.click('[data-testid="link-row"][data-link="hook"] [data-testid="link-suspend"]', "hook's Suspend button")
        accept_confirmation(driver, "suspending hook")
        state = page.wait_overview("hook paused", lambda rows: rows.get("hook", {}).get("state") == "paused")
        hook = state["rows"]["hook"]
        if hook["label"] != "paused" or "link-resume" not in hook["buttons"] or "link-suspend" in hook["buttons"]:
            raise Failure(f"paused hook shows {hook}")
        page.screenshot("05-paused.png")
        axe_check(page, "05-paused")
        log(f"paused with the Suspend button; its buttons now {hook['buttons']}")
        page.click('[data-testid="link-row"][data-link="hook"] [data-testid="link-resume"]', "hook's Resume button")
        log(f"resumed with the Resume button: verifying, probes {verifying_shown('06-resumed-verifying.png')}")
        state = page.wait_overview("hook active again", active)
        if "link-suspend" not in state["rows"]["hook"]["buttons"] or "link-resume" in state["rows"]["hook"]["buttons"]:
            raise Failure(f"active hook shows the buttons {state['rows']['hook']['buttons']}")
        axe_check(page, "overview-after-resume")
        log("active again after Resume")

        # --- a rejected entry whose error text is markup is rendered as text ----------------
        poison = append(base, [entry("poison")])
        page.open_link("hook")
        detail = page.wait_detail("the dead letter of the poison entry",
                                  lambda d: any(x["offset"] == poison for x in d["dead"]))
        shown = [x["error"] for x in detail["dead"] if x["offset"] == poison]
        if not any('<b data-testid="injected">' in text for text in shown):
            raise Failure(f"the dead letter's error is not shown as text: {shown}")
        if detail["injected"]:
            raise Failure("markup from an error text was parsed into the page")
        page.screenshot("07-dead-letter-markup.png")
        log("dead letter: its markup is shown as text, not parsed")

        # --- the sync log, paged with Older and Newer ----------------------------------------
        append(base, [entry(f"bulk-{i}") for i in range(BULK_REJECTED)])
        failed = str(1 + BULK_REJECTED)
        detail = page.wait_detail(f"{failed} failed dead letters and a full sync log page",
                                  lambda d: d["facts"].get("fact-failed-dead-letters") == failed
                                  and d["facts"].get("fact-lag") == "0" and len(d["sync"]) == PAGE_LIMIT)
        first = [r["sequence"] for r in detail["sync"]]
        if first != list(range(first[0], first[0] - PAGE_LIMIT, -1)):
            raise Failure(f"the first sync log page is not the newest records in order: {first}")
        if not detail["older"] or detail["newer"]:
            raise Failure(f"on the first page Older should be enabled and Newer disabled: {detail['older']}, {detail['newer']}")
        page.screenshot("08-sync-log-page-1.png")
        page.click('[data-testid="sync-log-older"]', "the sync log's Older button")
        detail = page.wait_detail("the older sync log page", lambda d: d["sync"] and d["sync"][0]["sequence"] < first[-1])
        second = [r["sequence"] for r in detail["sync"]]
        if second[0] != first[-1] - 1 or second != list(range(second[0], second[0] - len(second), -1)):
            raise Failure(f"the older page does not continue the first ({first[-1]}...): {second}")
        if not detail["newer"]:
            raise Failure("on the older page the Newer button is disabled")
        page.screenshot("09-sync-log-page-2.png")
        axe_check(page, "detail-sync-log-page-2")
        page.click('[data-testid="sync-log-newer"]', "the sync log's Newer button")
        detail = page.wait_detail("the first sync log page again", lambda d: d["sync"] and d["sync"][0]["sequence"] >= first[0])
        if detail["newer"]:
            raise Failure("back on the first page the Newer button is enabled")
        log(f"sync log: page 1 {first[0]}..{first[-1]}, Older: {second[0]}..{second[-1]}, Newer: back to {detail['sync'][0]['sequence']}")

        # --- a dead letter retried with its button -------------------------------------------
        retry = append(base, [entry("retry-1")])
        row = f'[data-testid="dead-letter-row"][data-offset="{retry}"]'
        page.wait_detail("the retry-1 dead letter, failed, with a Retry button",
                         lambda d: any(x["offset"] == retry and x["status"] == "failed" and x["retry"] for x in d["dead"]))
        page.screenshot("10-dead-letter-failed.png")
        page.click(f'{row}[data-status="failed"] [data-testid="dead-letter-retry"]', "Retry (the receiver still rejects)")
        page.wait_detail("the page to say the retry failed", lambda d: page.common()["message"].startswith("Retry failed"))
        detail = page.detail()
        letter = [x for x in detail["dead"] if x["offset"] == retry]
        if not letter or letter[0]["status"] != "failed" or page.common()["message_kind"] != "error":
            raise Failure(f"after a rejected retry the letter shows {letter}, the message {page.common()}")
        log(f"retry while the receiver rejects: {page.common()['message']!r}")
        with Receiver.lock:
            Receiver.reject_retry = False
        page.click(f'{row}[data-status="failed"] [data-testid="dead-letter-retry"]', "Retry (the receiver accepts)")
        detail = page.wait_detail("the retry-1 dead letter resolved",
                                  lambda d: any(x["offset"] == retry and x["status"] == "resolved" for x in d["dead"])
                                  and any(r["event"] == "entry_resolved" for r in d["sync"]))
        if any(x["offset"] == retry and x["retry"] for x in detail["dead"]):
            raise Failure("a resolved dead letter still offers Retry")
        if page.common()["message"] != "Retry: done":
            raise Failure(f"after the retry the page says {page.common()['message']!r}")
        if "retry-1" not in received_keys():
            raise Failure("the receiver does not have the retried entry")
        page.screenshot("11-dead-letter-resolved.png")
        axe_check(page, "detail-after-retry")
        log("retry: the dead letter is resolved and the receiver has the entry")

        # --- the capture source: its row, paused and resumed with its buttons --------------------
        page.back_to_overview()
        psql(f"INSERT INTO {SOURCE_TAG} VALUES (1, 'captured')")
        source = page.wait_sources("crm active with one appended entry", lambda rows: rows.get("crm", {}).get("state") == "active"
                                   and rows["crm"]["appended"] == "1" and rows["crm"]["position"] != "—")["crm"]
        if not source["lag_time"].endswith(" ms") or source["lag_bytes"] == "—" or source["stream"] != "events":
            raise Failure(f"the source's row shows {source}")
        page.screenshot("12-source-active.png")
        page.click('[data-testid="source-row"][data-source="crm"] [data-testid="source-suspend"]', "crm's Suspend button")
        accept_confirmation(driver, "suspending crm")
        source = page.wait_sources("crm paused", lambda rows: rows.get("crm", {}).get("state") == "paused"
                                   and rows["crm"]["last_event"] == "paused")["crm"]
        if "source-resume" not in source["buttons"] or "source-suspend" in source["buttons"]:
            raise Failure(f"paused crm shows the buttons {source['buttons']}")
        axe_check(page, "overview-source-paused")
        page.click('[data-testid="source-row"][data-source="crm"] [data-testid="source-resume"]', "crm's Resume button")
        source = page.wait_sources("crm active again", lambda rows: rows.get("crm", {}).get("state") == "active"
                                   and rows["crm"]["last_event"] == "resumed")["crm"]
        if "source-suspend" not in source["buttons"]:
            raise Failure(f"active crm shows the buttons {source['buttons']}")
        page.screenshot("13-source-resumed.png")
        log(f"source: crm at {source['position']}, lag {source['lag_bytes']} / {source['lag_time']}; paused and resumed with its buttons")

        # --- a cluster member: members, placement, owners and owner epochs -------------------
        if driver.execute_script(Page.CLUSTER)["shown"]:
            raise Failure("a broker outside a cluster shows a Cluster section")
        nats_port = start_nats(os.path.join(directory, "nats"))
        member = start_cluster_member(os.path.join(directory, "solo"), nats_port)
        page = Page(driver, f"http://127.0.0.1:{member}/").open()

        def placed():
            cluster = driver.execute_script(Page.CLUSTER)
            leased = cluster["links"].get("leased", {})
            capture = cluster["sources"].get("capture", {})
            return cluster if (cluster["shown"] and leased.get("owner") == "solo" and leased.get("epoch", "").isdigit()
                               and capture.get("owner") == "solo" and capture.get("epoch", "").isdigit()) else None
        cluster = wait_for("the cluster section with link leased and source capture owned by solo", placed)
        want_members = {"solo": {"health": "live", "links": "1"}, "b": {"health": "absent", "links": "1"}}
        if cluster["node"] != "solo" or cluster["members"] != want_members:
            raise Failure(f"the cluster section shows member {cluster['node']!r} and members {cluster['members']}, not {want_members}")
        if cluster["links"]["leased"]["placement"] != "leased" or int(cluster["links"]["leased"]["epoch"]) < 1:
            raise Failure(f"link leased shows {cluster['links']['leased']}")
        if cluster["links"].get("pinned") != {"placement": "pinned", "owner": "b", "epoch": ""}:
            raise Failure(f"link pinned shows {cluster['links'].get('pinned')}")
        if not cluster["sourcesShown"] or cluster["sources"]["capture"]["placement"] != "leased":
            raise Failure(f"source capture shows {cluster['sources']} (table shown: {cluster['sourcesShown']})")
        state = page.wait_overview("the leased link running here", lambda rows: rows.get("leased", {}).get("state") == "active")
        if "pinned" in state["rows"]:
            raise Failure("the links table of member solo lists link pinned, which is pinned to member b")
        page.screenshot("14-cluster.png")
        axe_check(page, "overview-cluster")
        log(f"cluster: member solo live with link leased (owner epoch {cluster['links']['leased']['epoch']}) and source "
            f"capture (owner epoch {cluster['sources']['capture']['epoch']}), link pinned on absent member b")

        # --- auth on: no token, then the admin token typed into the page ---------------------
        token = secrets.token_hex(16)
        os.environ["BROWSER_TEST_ADMIN_TOKEN"] = token  # the broker reads it; never printed
        locked = start_broker(os.path.join(directory, "locked"), free_port(),
                              auth="{ enabled: true, tokens: [ { name: a, role: admin, token_env: BROWSER_TEST_ADMIN_TOKEN } ] }")
        page = Page(driver, f"http://127.0.0.1:{locked}/").open()
        # (an unauthorized poll does not count as a completed one: no fresh() here)
        wait_for("the page to ask for a token", lambda: (lambda c: c["connection"] == "unauthorized"
                                                         and c["role"] == "none")(page.common()))
        common, state = page.common(), driver.execute_script(Page.OVERVIEW)
        if common["role"] != "none" or common["connection"] != "unauthorized":
            raise Failure(f"with auth on and no token the page shows {common}")
        if state["rows"] or driver.find_elements(By.CSS_SELECTOR, '[data-testid="link-suspend"]'):
            raise Failure("with auth on and no token the page shows links or operator buttons")
        field = page.element('[data-testid="token-input"]', "the token field")
        page.screenshot("15-auth-no-token.png")
        axe_check(page, "token")
        log("auth on, no token: the page asks for one and shows nothing else")

        field.click()
        field.send_keys(token)
        page.click('[data-testid="token-use"]', "the token form's Use button")
        state = page.wait_overview("the links with an admin token", lambda rows: "hook" in rows and "healthy" in rows
                                   and "link-suspend" in rows["healthy"]["buttons"])
        common = page.common()
        if common["role"] != "admin":
            raise Failure(f"with the admin token the page shows the role {common['role']!r}")
        if field.get_attribute("value"):
            raise Failure("the token field still holds the token after Use")
        if token in driver.page_source:
            raise Failure("the token appears in the page")
        page.screenshot("16-auth-admin.png")
        log(f"auth on, admin token typed: links {sorted(state['rows'])} with their operator buttons")
        log("passed")
    except WebDriverException as error:
        raise Failure(f"the browser failed: {error.msg or error}") from error
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception as error:  # stop_all() below stops what quit() could not
                log(f"driver.quit: {error}")
        if receiver is not None:
            receiver.shutdown()
            receiver.server_close()
        stop_all()
        try:
            psql(f"SELECT pg_drop_replication_slot('{SOURCE_TAG}') FROM pg_replication_slots WHERE slot_name = '{SOURCE_TAG}'; "
                 f"DROP PUBLICATION IF EXISTS {SOURCE_TAG}; DROP TABLE IF EXISTS {SOURCE_TAG}")
        except Failure as error:
            log(f"cleaning up the source's database: {error}")
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
