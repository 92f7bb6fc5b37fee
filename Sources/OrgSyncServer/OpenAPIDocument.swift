/// The HTTP API, as an OpenAPI 3.0 document. Served at `GET /openapi.yaml`; this string is
/// the one copy in the repository (tests check every route answers as it says).
public let openAPIDocument = #"""
openapi: 3.0.3
info:
  title: orgsync broker API
  version: "1"
  description: |
    Append data update events to durable streams and watch the links that apply them to
    target orgs. Errors are `{"error":{"code","message"}}`. With auth enabled every request
    needs `Authorization: Bearer <token>`; `produce` tokens may append and read, `admin`
    tokens may do everything. Health (and, if configured, metrics) may be open.
servers:
  - url: http://127.0.0.1:7070
security:
  - bearer: []
paths:
  /v1/streams:
    get:
      operationId: listStreams
      summary: Every stream with its offsets, size and compression ratio.
      responses:
        "200":
          description: The streams.
          content:
            application/json:
              schema:
                type: object
                required: [streams]
                properties:
                  streams:
                    type: array
                    items: { $ref: "#/components/schemas/StreamInfo" }
        "401": { $ref: "#/components/responses/Unauthorized" }
  /v1/streams/{stream}:
    parameters:
      - $ref: "#/components/parameters/Stream"
    get:
      operationId: getStream
      summary: One stream's end offset, segments, bytes and compression ratio.
      responses:
        "200":
          description: The stream.
          content:
            application/json:
              schema: { $ref: "#/components/schemas/StreamInfo" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "404": { $ref: "#/components/responses/NotFound" }
  /v1/streams/{stream}/entries:
    parameters:
      - $ref: "#/components/parameters/Stream"
    post:
      operationId: appendEntries
      summary: Append one entry (application/json) or many (application/x-ndjson, one per line).
      description: |
        Answered 201 only once every entry of the request is durable. The request is all or
        nothing: one invalid entry (its line number is in the message) rejects it whole and
        appends nothing.

        Idempotency-Key (request header, optional): 1-255 visible ASCII characters naming this
        request. A retry with the same key appends nothing and gets the original 201 with
        Idempotent-Replayed true; the same key with other entries is 422; while the first
        request with the key is still in flight, 409 (with Retry-After). Keys are kept in the
        log with the entries, across crashes and restarts, for the stream's window (24 h, up to
        1 000 000 keys by default); an invalid key is 400. (Described here rather than as a
        header parameter: schema-driven fuzzers reuse generated keys across requests, which
        makes the by-design 422 look like a valid request refused.)

        Content-Encoding (request header, optional): gzip or deflate (the zlib format) bodies
        are inflated as they arrive, under the same limits as plain ones (a body that inflates
        past the body limit is 413, found while inflating); identity or none means plain; any
        other coding is 415. A Transfer-Encoding other than chunked is 501.

        The broker holds at most server.inflight_body_bytes_max bytes of request bodies at
        once; a request that finds no room within a short wait is 503 with Retry-After and
        appends nothing.
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Entry" }
          application/x-ndjson:
            schema:
              description: |
                One Entry per line (UTF-8 JSON objects separated by "\n"; blank lines are
                skipped). Described here as the array of the lines' entries.
              type: array
              minItems: 1
              items: { $ref: "#/components/schemas/Entry" }
      responses:
        "201":
          description: Durable; the offsets the entries were given.
          headers:
            Idempotent-Replayed:
              description: true when this answers a retry with a key already seen (nothing was appended).
              schema: { type: string, enum: ["true"] }
          content:
            application/json:
              schema:
                type: object
                required: [first_offset, last_offset, count]
                properties:
                  first_offset: { type: integer, format: int64, minimum: 0 }
                  last_offset: { type: integer, format: int64, minimum: 0 }
                  count: { type: integer, minimum: 1 }
        "400": { $ref: "#/components/responses/BadRequest" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "403": { $ref: "#/components/responses/Forbidden" }
        "404": { $ref: "#/components/responses/NotFound" }
        "409":
          description: The first request with this Idempotency-Key is still in flight (code idempotency_key_in_flight); retry later.
          content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
        "413": { $ref: "#/components/responses/TooLarge" }
        "415":
          description: |
            Content-Type is neither application/json nor application/x-ndjson, or Content-Encoding
            is not gzip, deflate or identity (the answer then has Accept-Encoding); nothing appended.
          headers:
            Accept-Encoding:
              description: The content codings accepted (on a 415 for Content-Encoding).
              schema: { type: string }
          content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
        "422":
          description: This Idempotency-Key was used for a request with other entries (code idempotency_key_reused); nothing appended.
          content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
        "501":
          description: A Transfer-Encoding other than chunked (code transfer_coding_not_implemented); nothing appended.
          content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
        "503":
          description: |
            Starting, shutting down, the stream is refused as corrupt, or the broker's budget of
            request bodies in flight is spent (code request_bodies_over_budget, with Retry-After);
            nothing appended.
          headers:
            Retry-After:
              description: Seconds to wait before retrying (when the budget of bodies in flight is spent).
              schema: { type: integer, minimum: 0 }
          content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
        "507": { $ref: "#/components/responses/InsufficientStorage" }
  /v1/whoami:
    get:
      operationId: whoami
      summary: What the presented token may do (the status page shows operator buttons only to admins).
      description: |
        Without an Authorization header the answer is role `none` (or `admin` when auth is
        off); a header that is not a known bearer token is 401. The token is never echoed.
      security: [{}, { bearer: [] }]
      responses:
        "200":
          description: The token's role.
          content:
            application/json:
              schema:
                type: object
                required: [auth_enabled, role]
                properties:
                  auth_enabled: { type: boolean }
                  role: { type: string, enum: [admin, produce, none] }
        "401": { $ref: "#/components/responses/Unauthorized" }
  /v1/links:
    get:
      operationId: listLinks
      summary: Every link's state, cursor, end offset, lag, last error, probe progress and counters.
      responses:
        "200":
          description: The links, in configuration order.
          content:
            application/json:
              schema:
                type: object
                required: [links]
                properties:
                  links:
                    type: array
                    items: { $ref: "#/components/schemas/LinkStatus" }
        "401": { $ref: "#/components/responses/Unauthorized" }
  /v1/links/{link}:
    parameters:
      - $ref: "#/components/parameters/Link"
    get:
      operationId: getLink
      summary: One link's status.
      responses:
        "200": { $ref: "#/components/responses/LinkStatus" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "404": { $ref: "#/components/responses/NotFound" }
  /v1/links/{link}/suspend:
    parameters:
      - $ref: "#/components/parameters/Link"
    post:
      operationId: suspendLink
      summary: Operator pause. The cursor freezes and the target is not probed; it outlasts a restart.
      responses:
        "200": { $ref: "#/components/responses/LinkStatus" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "403": { $ref: "#/components/responses/Forbidden" }
        "404": { $ref: "#/components/responses/NotFound" }
  /v1/links/{link}/resume:
    parameters:
      - $ref: "#/components/parameters/Link"
    post:
      operationId: resumeLink
      summary: End an operator pause. The link verifies the target first unless force is true.
      parameters:
        - name: force
          in: query
          required: false
          description: Resume at once, without the K verification probes.
          schema: { type: boolean, default: false }
      responses:
        "200": { $ref: "#/components/responses/LinkStatus" }
        "400": { $ref: "#/components/responses/BadParameter" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "403": { $ref: "#/components/responses/Forbidden" }
        "404": { $ref: "#/components/responses/NotFound" }
        "409":
          description: The link is diverged (code link_diverged); only a reset or an adoption ends that.
          content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
  /v1/links/{link}/cursor:
    parameters:
      - $ref: "#/components/parameters/Link"
    post:
      operationId: setLinkCursor
      summary: Move a paused link's cursor (the next offset it applies); the same as reset while paused.
      description: |
        Refused (409) unless the link is paused or diverged, or when the offset is beyond the
        stream's end. The target's stored position is rewritten too, so moving back really
        replays.
      parameters:
        - name: offset
          in: query
          required: true
          schema: { type: integer, format: int64, minimum: 0 }
      responses:
        "200": { $ref: "#/components/responses/LinkStatus" }
        "400": { $ref: "#/components/responses/BadParameter" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "403": { $ref: "#/components/responses/Forbidden" }
        "404": { $ref: "#/components/responses/NotFound" }
        "409": { $ref: "#/components/responses/Conflict" }
        "502": { $ref: "#/components/responses/TargetUnavailable" }
  /v1/links/{link}/reset:
    parameters:
      - $ref: "#/components/parameters/Link"
    post:
      operationId: resetLink
      summary: Consume from an offset, rewriting the target's stored position in its own transaction.
      description: |
        For a paused or diverged link. The target's position becomes (this stream's id and
        epoch, from - 1), or none when from is 0, and the cursor from; a diverged link then
        consumes again, a paused one stays paused. 409 in any other state or past the end.
      parameters:
        - name: from
          in: query
          required: true
          schema: { type: integer, format: int64, minimum: 0 }
      responses:
        "200": { $ref: "#/components/responses/LinkStatus" }
        "400": { $ref: "#/components/responses/BadParameter" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "403": { $ref: "#/components/responses/Forbidden" }
        "404": { $ref: "#/components/responses/NotFound" }
        "409": { $ref: "#/components/responses/Conflict" }
        "502": { $ref: "#/components/responses/TargetUnavailable" }
  /v1/links/{link}/adopt:
    parameters:
      - $ref: "#/components/parameters/Link"
    post:
      operationId: adoptLinkPosition
      summary: Take the offset the target holds as this stream's, and consume after it.
      description: |
        For a paused or diverged link whose target is known to hold this stream's entries up to
        its stored offset (say, a data directory restored from a backup). Refused (409) when the
        target holds no position, or one at or past the stream's end.
      responses:
        "200": { $ref: "#/components/responses/LinkStatus" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "403": { $ref: "#/components/responses/Forbidden" }
        "404": { $ref: "#/components/responses/NotFound" }
        "409": { $ref: "#/components/responses/Conflict" }
        "502": { $ref: "#/components/responses/TargetUnavailable" }
  /v1/links/{link}/sync-log:
    parameters:
      - $ref: "#/components/parameters/Link"
    get:
      operationId: getSyncLog
      summary: The link's connection events and failed/resolved entries, newest first, paged.
      parameters:
        - name: before
          in: query
          required: false
          description: Only records with a smaller sequence number (next_before of the previous page).
          schema: { type: integer, format: int64, minimum: 0 }
        - $ref: "#/components/parameters/Limit"
      responses:
        "200":
          description: One page of records.
          content:
            application/json:
              schema:
                type: object
                required: [records]
                properties:
                  records:
                    type: array
                    items: { $ref: "#/components/schemas/SyncLogRecord" }
                  next_before:
                    type: integer
                    format: int64
                    minimum: 0
                    description: Pass as before for the next (older) page; absent on the last page.
        "400": { $ref: "#/components/responses/BadParameter" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "404": { $ref: "#/components/responses/NotFound" }
  /v1/links/{link}/dead-letters:
    parameters:
      - $ref: "#/components/parameters/Link"
    get:
      operationId: getDeadLetters
      summary: Entries the target rejected, newest offset first, paged.
      parameters:
        - name: before
          in: query
          required: false
          description: Only dead letters with a smaller offset (next_before of the previous page).
          schema: { type: integer, format: int64, minimum: 0 }
        - name: status
          in: query
          required: false
          schema: { type: string, enum: [failed, resolved] }
        - $ref: "#/components/parameters/Limit"
      responses:
        "200":
          description: One page of dead letters.
          content:
            application/json:
              schema:
                type: object
                required: [dead_letters]
                properties:
                  dead_letters:
                    type: array
                    items: { $ref: "#/components/schemas/DeadLetter" }
                  next_before:
                    type: integer
                    format: int64
                    minimum: 0
                    description: Pass as before for the next (older) page; absent on the last page.
        "400": { $ref: "#/components/responses/BadParameter" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "404": { $ref: "#/components/responses/NotFound" }
  /v1/links/{link}/dead-letters/{offset}/retry:
    parameters:
      - $ref: "#/components/parameters/Link"
      - name: offset
        in: path
        required: true
        description: The dead letter's offset in the stream.
        schema: { type: integer, format: int64, minimum: 0 }
    post:
      operationId: retryDeadLetter
      summary: Apply a failed dead letter again; on success it becomes resolved.
      responses:
        "200":
          description: The dead letter, now resolved.
          content:
            application/json:
              schema: { $ref: "#/components/schemas/DeadLetter" }
        "400": { $ref: "#/components/responses/BadParameter" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "403": { $ref: "#/components/responses/Forbidden" }
        "404": { $ref: "#/components/responses/NotFound" }
        "409":
          description: |
            The dead letter is already resolved (code conflict), or the target rejected the entry
            again (code retry_rejected); it stays failed.
          content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
        "502":
          description: The target could not be reached (code target_unavailable); the dead letter stays failed.
          content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
  /health/live:
    get:
      operationId: live
      summary: The process is up.
      security: []
      responses:
        "200":
          description: Alive.
          content:
            application/json:
              schema: { type: object, properties: { status: { type: string } } }
  /health/ready:
    get:
      operationId: ready
      summary: Streams are open and the broker accepts requests.
      security: []
      responses:
        "200":
          description: Ready.
          content:
            application/json:
              schema: { type: object, properties: { status: { type: string } } }
        "503": { $ref: "#/components/responses/Unavailable" }
  /metrics:
    get:
      operationId: metrics
      summary: Prometheus text exposition.
      responses:
        "200":
          description: Metrics.
          content:
            text/plain:
              schema: { type: string }
        "401": { $ref: "#/components/responses/Unauthorized" }
  /openapi.yaml:
    get:
      operationId: openapi
      summary: This document.
      security: []
      responses:
        "200":
          description: The OpenAPI document.
          content:
            application/yaml:
              schema: { type: string }
  /:
    get:
      operationId: statusPage
      summary: The operator's status page (HTML; its script reads this API with the operator's token).
      security: []
      responses:
        "200":
          description: The page. It holds no data.
          content:
            text/html:
              schema: { type: string }
  /ui/app.js:
    get:
      operationId: statusPageScript
      summary: The status page's script.
      security: []
      responses:
        "200":
          description: JavaScript.
          content:
            text/javascript:
              schema: { type: string }
  /ui/app.css:
    get:
      operationId: statusPageStyle
      summary: The status page's style sheet.
      security: []
      responses:
        "200":
          description: CSS.
          content:
            text/css:
              schema: { type: string }
components:
  securitySchemes:
    bearer:
      type: http
      scheme: bearer
  parameters:
    Stream:
      name: stream
      in: path
      required: true
      schema: { type: string, pattern: "^[A-Za-z0-9._-]{1,128}$", example: events }
    Link:
      name: link
      in: path
      required: true
      schema: { type: string, pattern: "^[A-Za-z0-9._-]{1,128}$", example: demo }
    Limit:
      name: limit
      in: query
      required: false
      description: Page size.
      schema: { type: integer, minimum: 1, maximum: 1000, default: 100 }
  schemas:
    Entry:
      type: object
      required: [org, object, op, key, ts]
      properties:
        org: { type: string, minLength: 1 }
        object: { type: string, minLength: 1 }
        op: { type: string, enum: [insert, upsert, delete] }
        key: { type: string, minLength: 1 }
        ts: { type: string, minLength: 1 }
        fields: { type: object, additionalProperties: true, nullable: true }
      additionalProperties: true
    StreamInfo:
      type: object
      required: [name, start_offset, end_offset, segments, stored_bytes, raw_bytes, compression_ratio]
      properties:
        name: { type: string }
        start_offset: { type: integer, format: int64, minimum: 0 }
        end_offset: { type: integer, format: int64, minimum: 0 }
        segments: { type: integer, minimum: 1 }
        stored_bytes: { type: integer, format: int64, minimum: 0 }
        raw_bytes: { type: integer, format: int64, minimum: 0 }
        compression_ratio: { type: number, minimum: 0 }
    LinkStatus:
      type: object
      required: [name, stream, state, held_down, cursor, end_offset, lag, probe_progress, probe_successes,
                 probe_threshold, time_in_state_ms, suspensions, flaps, hold_downs, rejected_entries,
                 applied_entries, dead_letters_failed, running, stream_id, epoch]
      properties:
        name: { type: string }
        stream: { type: string }
        state:
          type: string
          enum: [active, suspended, verifying, paused, diverged]
          description: |
            active: applying entries. suspended: the target failed; probing with backoff.
            verifying: probes answer; K in a row resume the link. paused: by an operator, or
            stopped on a rejected entry. diverged: the target holds a position of another
            stream, of a cut epoch, or past the end; nothing is applied until reset or adopt.
        held_down: { type: boolean, description: A flapping link waits out its hold-down. }
        cursor: { type: integer, format: int64, minimum: 0, description: The next offset to apply. }
        end_offset: { type: integer, format: int64, minimum: 0 }
        lag: { type: integer, format: int64, minimum: 0, description: end_offset - cursor (entries). }
        last_error: { type: string }
        probe_progress: { type: string, pattern: "^[0-9]+/[0-9]+$", description: k/K while verifying. }
        probe_successes: { type: integer, minimum: 0 }
        probe_threshold: { type: integer, minimum: 1 }
        time_in_state_ms: { type: integer, format: int64, minimum: 0 }
        suspensions: { type: integer, minimum: 0 }
        flaps: { type: integer, minimum: 0 }
        hold_downs: { type: integer, minimum: 0 }
        rejected_entries: { type: integer, minimum: 0 }
        applied_entries: { type: integer, format: int64, minimum: 0 }
        dead_letters_failed: { type: integer, minimum: 0 }
        running: { type: boolean }
        stream_id: { type: string, description: The identity of the stream the link reads; targets store it with their offset. }
        epoch: { type: integer, format: int64, minimum: 1, description: Grows whenever a repair cut acknowledged entries. }
    SyncLogRecord:
      type: object
      required: [sequence, time_ms, event, state, reason]
      properties:
        sequence: { type: integer, format: int64, minimum: 0 }
        time_ms: { type: integer, format: int64, minimum: 0, description: Milliseconds since 1970 (UTC). }
        event:
          type: string
          enum: [suspended, held_down, verifying, verification_failed, resumed, forced_resume, paused,
                 entry_failed, entry_resolved, cursor_set, diverged, position_reset]
        state: { type: string, enum: [active, suspended, verifying, paused, diverged] }
        reason: { type: string }
        offset: { type: integer, format: int64, minimum: 0 }
        status: { type: string, enum: [failed, resolved] }
        target_code: { type: string }
    DeadLetter:
      type: object
      required: [offset, entry, error, status, failed_at_ms, attempts]
      properties:
        offset: { type: integer, format: int64, minimum: 0 }
        entry: { type: string, description: The entry's JSON as it was appended. }
        error: { type: string }
        target_code: { type: string }
        status: { type: string, enum: [failed, resolved] }
        failed_at_ms: { type: integer, format: int64, minimum: 0 }
        resolved_at_ms: { type: integer, format: int64, minimum: 0 }
        attempts: { type: integer, minimum: 1 }
    Error:
      type: object
      required: [error]
      properties:
        error:
          type: object
          required: [code, message]
          properties:
            code: { type: string }
            message: { type: string }
  responses:
    LinkStatus:
      description: The link's status.
      content:
        application/json:
          schema: { $ref: "#/components/schemas/LinkStatus" }
    BadParameter:
      description: A query or path parameter is malformed or out of range.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    Conflict:
      description: The link's state does not allow this now.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    BadRequest:
      description: Malformed JSON, invalid UTF-8, a missing or wrong-typed field; nothing appended.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    Unauthorized:
      description: Missing or unknown bearer token.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    Forbidden:
      description: The token's role may not do this.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    NotFound:
      description: No such stream or link.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    TooLarge:
      description: The body, an entry, or the number of entries is over its limit; nothing appended.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    UnsupportedMediaType:
      description: Content-Type is neither application/json nor application/x-ndjson.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    TargetUnavailable:
      description: The target could not be reached to read or rewrite its position (code target_unavailable).
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    Unavailable:
      description: Starting, shutting down, or the stream is refused as corrupt.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    InsufficientStorage:
      description: The disk is full; nothing of the request was acknowledged.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
"""#
