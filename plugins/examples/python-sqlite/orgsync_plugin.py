"""Protocol side of an orgsync out-of-process adapter (protocol versions 1, 2 and 3).

Copy this file next to your adapter and call ``main(YourAdapter(), name, version)``. It reads
one JSON request per line on stdin, calls your adapter, and writes one JSON response per line
on stdout. Standard library only. See plugins/PROTOCOL.md for the protocol itself.

Your adapter is any object with these methods:

    open(link, stream, settings, data_directory)  connect; create what you need
    apply(stream, entries, retry=False, identity=None, owner_epoch=0)
                             entries: list of (offset, entry dict), in offset order; apply all
                             of them as one unit or none. `retry` marks a dead-letter retry.
                             `identity` is the batch's StreamIdentity from protocol 2 on, None
                             under protocol 1; `owner_epoch` the batch's owner epoch (protocol 3;
                             an adapter whose apply takes it speaks protocol 3).
    probe()                  one cheap round trip to the target
    applied_offset()         int or None: the last offset stored in the target for this link
    close()                  release everything

and, to speak protocol 2 (offsets that carry the stream's id and epoch) or 3 (and the owner
epoch of the broker that applied them):

    applied_position()       Position or None: what the target stores for this link
    set_applied_position(position)   Position or None: rewrite (None: delete) it, atomically

An adapter without `applied_position` speaks protocol 1 only. `plan_apply` and
`position_after` below hold the rules for the stored position; call them inside the apply's
transaction so the adapter only reads and writes its row.

To report a failure, raise one of the exceptions below. Any other exception is reported
as a connection failure (the safe choice: the link suspends, nothing is skipped).
"""
import inspect
import json
import logging
import sys
from typing import NamedTuple, Optional

PROTOCOL_VERSIONS = (1, 2, 3)  # what this file speaks; an adapter without applied_position: 1 only
STREAM_ID_CHARS_MAX = 64


class StreamIdentity(NamedTuple):
    """Which stream, and which version of its history (`epoch` grows when acknowledged
    entries are cut), a batch's offsets belong to."""
    stream_id: str
    epoch: int


class Position(NamedTuple):
    """What a target stores for a link: its last applied offset, the identity that offset
    belongs to, and the owner epoch of the broker that applied it. `stream_id` and `epoch` are
    both None for a row written before protocol 2; `owner_epoch` is 0 before protocol 3 and on a
    standalone broker."""
    stream_id: Optional[str]
    epoch: Optional[int]
    offset: int
    owner_epoch: int = 0

    def wire(self):
        return {"streamId": self.stream_id, "epoch": self.epoch, "offset": self.offset, "ownerEpoch": self.owner_epoch}

    def describe(self):
        owner = f" owner epoch {self.owner_epoch}" if self.owner_epoch else ""
        if self.stream_id is None:
            return f"an offset stored before protocol 2 (offset {self.offset}){owner}"
        return f"stream {self.stream_id} epoch {self.epoch} offset {self.offset}{owner}"


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


class PositionConflict(AdapterFailure):
    """Protocol 2: the target's stored position belongs to another stream, or to a newer epoch
    of this one; nothing was committed. The link goes to `diverged` until an operator acts."""
    error_class = "position_conflict"


class Fenced(AdapterFailure):
    """Protocol 3: the target's stored position was written by a later owner of the link (a
    higher owner epoch): the broker sending this batch lost the link. Nothing was committed."""
    error_class = "fenced"


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


# --- protocol 2: the stored position -----------------------------------------------------------

def plan_apply(stored, identity, owner_epoch=0):
    """The offset at or below which a batch of `identity` skips entries, given the `stored`
    Position (or None): None means apply every entry. Raises Fenced when a later owner stored
    the position, PositionConflict when it belongs to another stream or a newer epoch: the
    batch must commit nothing."""
    if stored is not None and stored.owner_epoch > owner_epoch:
        raise Fenced(f"target position ({stored.describe()}) was stored by a later owner; "
                     f"this batch is from owner epoch {owner_epoch}")
    if stored is None or (stored.stream_id is None and stored.epoch is None):
        return None  # nothing stored, or a row from before protocol 2 the broker has checked
    if stored.stream_id is None or stored.epoch is None:
        raise PositionConflict(f"target position is incomplete: stream {stored.stream_id} epoch {stored.epoch} "
                               f"offset {stored.offset}; this batch is stream {identity.stream_id} epoch {identity.epoch}")
    if stored.stream_id == identity.stream_id and stored.epoch == identity.epoch:
        return stored.offset
    if stored.stream_id == identity.stream_id and stored.epoch < identity.epoch:
        return None  # written before a log repair: the broker starts after the checked position
    raise PositionConflict(f"target position belongs to {stored.describe()}; "
                           f"this batch is stream {identity.stream_id} epoch {identity.epoch}")


def position_after(stored, identity, last_offset, owner_epoch=0):
    """The Position to store, in the apply's transaction, after a batch of `identity` and
    `owner_epoch` ending at `last_offset` was applied. Under the same identity the stored offset
    never moves back (a dead-letter retry sits below it, a batch already applied ends at or below
    it); after a legacy row or an older epoch it becomes the batch's last offset."""
    same = stored is not None and (stored.stream_id, stored.epoch) == (identity.stream_id, identity.epoch)
    offset = max(stored.offset, last_offset) if same else last_offset
    return Position(identity.stream_id, identity.epoch, offset, owner_epoch)


def _identity(params):
    stream_id, epoch = params.get("streamId"), params.get("epoch")
    if not isinstance(stream_id, str) or not 1 <= len(stream_id) <= STREAM_ID_CHARS_MAX:
        raise ConnectionFailure(f"apply without a valid streamId (1-{STREAM_ID_CHARS_MAX} characters): {stream_id!r}")
    if not _is_count(epoch) or epoch < 1:
        raise ConnectionFailure(f"apply without a valid epoch (an integer >= 1): {epoch!r}")
    return StreamIdentity(stream_id, epoch)


def _owner_epoch(value):
    if value is None:
        return 0
    if not _is_count(value) or value < 0:
        raise ConnectionFailure(f"ownerEpoch must be an integer >= 0, not {value!r}")
    return value


def _position(value):
    """A Position from the wire (`setAppliedPosition`), or None for null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConnectionFailure(f"position must be an object or null, not {value!r}")
    stream_id, epoch, offset = value.get("streamId"), value.get("epoch"), value.get("offset")
    if not _is_count(offset) or offset < 0:
        raise ConnectionFailure(f"position offset must be an integer >= 0, not {offset!r}")
    owner_epoch = _owner_epoch(value.get("ownerEpoch"))
    if stream_id is None and epoch is None:
        return Position(None, None, offset, owner_epoch)
    if not isinstance(stream_id, str) or not 1 <= len(stream_id) <= STREAM_ID_CHARS_MAX:
        raise ConnectionFailure(f"position streamId must be 1-{STREAM_ID_CHARS_MAX} characters or null, not {stream_id!r}")
    if not _is_count(epoch) or epoch < 1:
        raise ConnectionFailure(f"position epoch must be an integer >= 1 (null only with a null streamId), not {epoch!r}")
    return Position(stream_id, epoch, offset, owner_epoch)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool)


# --- the loop ----------------------------------------------------------------------------------

def _chosen_version(adapter, offered):
    """The highest version both sides speak, or None."""
    if not hasattr(adapter, "applied_position"):
        ours = (1,)
    elif "owner_epoch" in inspect.signature(adapter.apply).parameters:
        ours = PROTOCOL_VERSIONS
    else:
        ours = (1, 2)
    common = [v for v in ours if isinstance(offered, list) and v in offered]
    return max(common) if common else None


def serve(adapter, name, version, stdin=None, stdout=None):
    """Answers requests until stdin closes or a `close` request is answered."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    log = logging.getLogger(name)
    protocol = 1  # until the handshake says otherwise

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
                chosen = _chosen_version(adapter, offered)
                if chosen is None:
                    raise ConnectionFailure(f"broker offers protocol versions {offered}; this plugin speaks "
                                            f"{', '.join(map(str, PROTOCOL_VERSIONS))}")
                protocol = chosen
                result = {"protocolVersion": protocol, "name": name, "version": version}
            elif method == "open":
                adapter.open(params["link"], params["stream"], params.get("settings", {}), params.get("dataDirectory", "."))
                result = {}
            elif method == "apply":
                entries = [(item["offset"], item["entry"]) for item in params["entries"]]
                retry = bool(params.get("dead_letter_retry", False))
                if protocol >= 3:
                    adapter.apply(params["stream"], entries, retry=retry, identity=_identity(params),
                                  owner_epoch=_owner_epoch(params.get("ownerEpoch")))
                elif protocol >= 2:
                    adapter.apply(params["stream"], entries, retry=retry, identity=_identity(params))
                else:
                    adapter.apply(params["stream"], entries, retry=retry)
                result = {}
            elif method == "probe":
                adapter.probe()
                result = {}
            elif method == "appliedOffset":
                result = {"appliedOffset": adapter.applied_offset()}
            elif method == "appliedPosition" and protocol >= 2:
                position = adapter.applied_position()
                result = {"position": position.wire() if position is not None else None}
            elif method == "setAppliedPosition" and protocol >= 2:
                if "position" not in params:
                    raise ConnectionFailure("setAppliedPosition without a position (null deletes it)")
                adapter.set_applied_position(_position(params["position"]))
                result = {}
            elif method == "close":
                adapter.close()
                send({"id": request_id, "result": {}})
                return 0
            else:
                raise ConnectionFailure(f"unknown method {method!r} (protocol version {protocol})")
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
