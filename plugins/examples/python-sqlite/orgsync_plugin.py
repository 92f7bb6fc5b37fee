"""Protocol side of an orgsync out-of-process adapter (protocol version 1).

Copy this file next to your adapter and call ``serve(YourAdapter())``. It reads one JSON
request per line on stdin, calls your adapter, and writes one JSON response per line on
stdout. Standard library only. See plugins/PROTOCOL.md for the protocol itself.

Your adapter is any object with these methods:

    open(link, stream, settings, data_directory)  connect; create what you need
    apply(stream, entries)   entries: list of (offset, entry dict), in offset order;
                             apply all of them as one unit or none
    probe()                  one cheap round trip to the target
    applied_offset()         int or None: the last offset stored in the target for this link
    close()                  release everything

To report a failure, raise one of the exceptions below. Any other exception is reported
as a connection failure (the safe choice: the link suspends, nothing is skipped).
"""
import json
import logging
import sys

PROTOCOL_VERSION = 1


class AdapterFailure(Exception):
    error_class = "connection"

    def __init__(self, message, target_code=None):
        super().__init__(message)
        self.message = message
        self.target_code = target_code

    def body(self):
        body = {"class": self.error_class, "message": self.message}
        if self.target_code is not None:
            body["targetCode"] = str(self.target_code)
        return body


class ConnectionFailure(AdapterFailure):
    """The target cannot be reached or used now; the link suspends and probes."""
    error_class = "connection"


class RetryableFailure(AdapterFailure):
    """A transient conflict (busy, deadlock); nothing was committed; the link retries."""
    error_class = "retryable"


class RejectedEntry(AdapterFailure):
    """The entry at `offset` can never apply; nothing of the batch was committed."""
    error_class = "rejected"

    def __init__(self, offset, message, target_code=None):
        super().__init__(message, target_code)
        self.offset = offset

    def body(self):
        body = super().body()
        body["offset"] = self.offset
        return body


def serve(adapter, name, version, stdin=None, stdout=None):
    """Answers requests until stdin closes or a `close` request is answered."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    log = logging.getLogger(name)

    def send(message):
        stdout.write(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n")
        stdout.flush()

    for raw in stdin:
        try:
            request = json.loads(raw)
            request_id = request["id"]
            method = request["method"]
            params = request.get("params") or {}
        except (ValueError, KeyError, TypeError) as error:
            log.error("unreadable request: %s", error)
            return 2
        try:
            if method == "handshake":
                offered = params.get("protocolVersions", [])
                if PROTOCOL_VERSION not in offered:
                    raise ConnectionFailure(f"broker offers protocol versions {offered}; this plugin speaks {PROTOCOL_VERSION}")
                result = {"protocolVersion": PROTOCOL_VERSION, "name": name, "version": version}
            elif method == "open":
                adapter.open(params["link"], params["stream"], params.get("settings", {}), params.get("dataDirectory", "."))
                result = {}
            elif method == "apply":
                entries = [(item["offset"], item["entry"]) for item in params["entries"]]
                adapter.apply(params["stream"], entries, retry=bool(params.get("dead_letter_retry", False)))
                result = {}
            elif method == "probe":
                adapter.probe()
                result = {}
            elif method == "appliedOffset":
                result = {"appliedOffset": adapter.applied_offset()}
            elif method == "close":
                adapter.close()
                send({"id": request_id, "result": {}})
                return 0
            else:
                raise ConnectionFailure(f"unknown method {method!r}")
            send({"id": request_id, "result": result})
        except AdapterFailure as failure:
            send({"id": request_id, "error": failure.body()})
        except Exception as error:  # noqa: BLE001 - every failure must be answered, classified
            log.exception("%s failed", method)
            send({"id": request_id, "error": {"class": "connection", "message": f"{type(error).__name__}: {error}"}})
    adapter.close()
    return 0


def main(adapter, name, version):
    """Entry point: logs go to stderr (the broker turns each line into a log line)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s: %(message)s")
    sys.exit(serve(adapter, name, version))
