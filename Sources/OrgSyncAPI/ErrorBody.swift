/// `{"error":{"code","message"}}`: every answer that is not 2xx.
public struct ErrorBody: Codable, Sendable, Hashable {
    public struct Detail: Codable, Sendable, Hashable {
        /// Stable, machine-readable: `bad_request`, `invalid_entry`, `payload_too_large`, …
        public var code: String
        public var message: String

        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    public var error: Detail

    public init(code: String, message: String) { error = Detail(code: code, message: message) }
}
