import Crypto
import Foundation

/// Signing as Standard Webhooks 1.0 says: `webhook-signature: v1,<base64 of HMAC-SHA256 over
/// "<webhook-id>.<webhook-timestamp>.<body>">`, keyed with the secret's bytes (the base64 after
/// `whsec_`). A receiver checks it with any Standard Webhooks library.
public enum StandardWebhookSignature {
    /// The prefix of a Standard Webhooks secret.
    public static let secretPrefix = "whsec_"
    /// Key sizes accepted: 24 to 64 bytes (the spec's examples use 24; HMAC-SHA256's block is 64).
    public static let secretBytesMin = 24
    public static let secretBytesMax = 64

    public enum SecretError: Error, Sendable, Hashable, CustomStringConvertible {
        case missingPrefix
        case notBase64
        case size(Int)

        public var description: String {
            switch self {
            case .missingPrefix: "must start with \(StandardWebhookSignature.secretPrefix) (a Standard Webhooks secret)"
            case .notBase64: "the part after \(StandardWebhookSignature.secretPrefix) is not base64"
            case .size(let count): "the key is \(count) bytes; it must be \(secretBytesMin)...\(secretBytesMax)"
            }
        }
    }

    /// The key bytes of a `whsec_…` secret. The error never quotes the secret.
    public static func key(fromSecret secret: String) throws(SecretError) -> [UInt8] {
        guard secret.hasPrefix(secretPrefix) else { throw .missingPrefix }
        guard let bytes = Data(base64Encoded: String(secret.dropFirst(secretPrefix.count))) else { throw .notBase64 }
        guard (secretBytesMin...secretBytesMax).contains(bytes.count) else { throw .size(bytes.count) }
        return Array(bytes)
    }

    /// The `webhook-signature` header value for one delivery.
    public static func signature(key: [UInt8], id: String, timestampSeconds: UInt64, body: [UInt8]) -> String {
        var message = Array("\(id).\(timestampSeconds).".utf8)
        message.append(contentsOf: body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))
        return "v1," + Data(mac).base64EncodedString()
    }
}
