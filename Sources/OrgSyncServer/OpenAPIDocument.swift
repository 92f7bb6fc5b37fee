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
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Entry" }
          application/x-ndjson:
            schema:
              type: string
              description: One Entry per line (UTF-8 JSON), lines separated by "\n".
      responses:
        "201":
          description: Durable; the offsets the entries were given.
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
        "413": { $ref: "#/components/responses/TooLarge" }
        "415": { $ref: "#/components/responses/UnsupportedMediaType" }
        "503": { $ref: "#/components/responses/Unavailable" }
        "507": { $ref: "#/components/responses/InsufficientStorage" }
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
      schema: { type: string, pattern: "^[A-Za-z0-9._-]{1,128}$" }
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
        fields: { type: object, additionalProperties: true }
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
    Unavailable:
      description: Starting, shutting down, or the stream is refused as corrupt.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
    InsufficientStorage:
      description: The disk is full; nothing of the request was acknowledged.
      content: { application/json: { schema: { $ref: "#/components/schemas/Error" } } }
"""#
