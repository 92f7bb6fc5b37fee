/// The HTTP API, as an OpenAPI 3.0 document: `Embedded/openapi.yaml`, compiled in and served at
/// `GET /openapi.yaml` (tests check every route answers as it says).
public let openAPIDocument = EmbeddedFiles.openapiYaml
