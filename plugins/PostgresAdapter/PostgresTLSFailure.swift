import NIOSSL
import PostgresNIO

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A connection that failed because of TLS, and why, in the words an operator acts on. Pure:
/// ``init(_:)`` reads what postgres-nio and swift-nio-ssl threw, ``message(settings:host:serverCertificate:now:)``
/// writes the reason; fetching the server's certificate to tell an expired one from an unknown
/// CA is ``PostgresServerCertificate``'s I/O.
enum PostgresTLSFailure: Sendable, Hashable {
    /// The server answered the TLS request with "no" (its `ssl` is off) and `sslmode` requires TLS.
    case serverWithoutTLS
    /// The certificate is valid but issued for other names than `host` (verify-full).
    case hostNameMismatch
    /// The certificate did not verify against the trust roots: expired, not yet valid, or not
    /// signed by a trusted CA; BoringSSL does not say which, the server's certificate tells.
    case certificateVerifyFailed
    /// The server closed the connection in the middle of the handshake.
    case closedDuringHandshake
    /// Anything else the handshake ended with; the TLS library's reason (e.g. an alert the server sent).
    case handshakeFailed(reason: String)

    /// The TLS failure `error` is, or nil when it is not about TLS.
    init?(_ error: any Error) {
        let underlying: any Error
        if let error = error as? PSQLError {
            if error.code == .sslUnsupported {
                self = .serverWithoutTLS
                return
            }
            guard let inner = error.underlying else { return nil }
            underlying = inner
        } else {
            underlying = error
        }
        if let error = underlying as? NIOSSLExtraError {
            guard error == .failedToValidateHostname || error == .serverHostnameImpossibleToMatch else { return nil }
            self = .hostNameMismatch
            return
        }
        guard let error = underlying as? NIOSSLError else { return nil }
        switch error {
        case .handshakeFailed(let boringSSL):
            let reasons = Self.reasonNames(boringSSL)
            if reasons.contains("CERTIFICATE_VERIFY_FAILED") {
                self = .certificateVerifyFailed
            } else if reasons.isEmpty || reasons.allSatisfy({ $0.hasPrefix("EOF during") }) {
                self = .closedDuringHandshake
            } else {
                self = .handshakeFailed(reason: reasons.joined(separator: ", "))
            }
        case .uncleanShutdown:
            self = .closedDuringHandshake
        default:
            self = .handshakeFailed(reason: String(describing: error))
        }
    }

    /// BoringSSL's reason names ("CERTIFICATE_VERIFY_FAILED", "SSLV3_ALERT_HANDSHAKE_FAILURE"),
    /// from descriptions like `Error: 268435581 error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED at file:line`.
    static func reasonNames(_ error: BoringSSLError) -> [String] {
        let stack: NIOBoringSSLErrorStack
        switch error {
        case .sslError(let errors), .unknownError(let errors), .invalidSNIName(let errors), .failedToSetALPN(let errors):
            stack = errors
        default:
            return [String(describing: error)]
        }
        return stack.map { reasonName(String(describing: $0)) }
    }

    static func reasonName(_ description: String) -> String {
        guard let start = description.firstRange(of: "OPENSSL_internal:")?.upperBound else {
            return description.hasPrefix("Error:  ") ? String(description.dropFirst("Error:  ".count)) : description
        }
        let rest = description[start...]
        return String(rest.prefix { $0 != " " })
    }

    /// Whether telling expired from unknown CA needs the server's certificate.
    var needsServerCertificate: Bool { self == .certificateVerifyFailed }

    /// The reason, starting with "TLS: ". `serverCertificate` is the validity of the server's
    /// certificate when it could be fetched (for ``certificateVerifyFailed``).
    func message(settings: PostgresTLSSettings, host: String, serverCertificate: PostgresServerCertificate.Validity?, now: Date) -> String {
        switch self {
        case .serverWithoutTLS:
            return "TLS: the server does not offer TLS, and sslmode=\(settings.mode.rawValue) requires it (turn ssl on at the server)"
        case .hostNameMismatch:
            return "TLS: host name \(host) does not match the server's certificate (sslmode=verify-full checks the names it was issued for)"
        case .certificateVerifyFailed:
            let trusted = settings.rootCertificateFile.map { "sslrootcert=\($0)" } ?? "the system's trust store"
            guard let validity = serverCertificate else {
                return "TLS: certificate verify failed: the server's certificate is expired, not yet valid, or not signed by a CA in \(trusted)"
            }
            if now > validity.notValidAfter {
                return "TLS: certificate verify failed: the server's certificate expired at \(Self.timestamp(validity.notValidAfter))"
            }
            if now < validity.notValidBefore {
                return "TLS: certificate verify failed: the server's certificate is not valid before \(Self.timestamp(validity.notValidBefore))"
            }
            return "TLS: certificate verify failed: unknown CA: the server's certificate is not signed by a CA in \(trusted)"
        case .closedDuringHandshake:
            let client = settings.certificateFile.map { "; it may have refused the client certificate sslcert=\($0)" } ?? ""
            return "TLS: the server closed the connection during the handshake\(client)"
        case .handshakeFailed(let reason):
            var text = "TLS: handshake failed: \(reason)"
            if reason.contains("ALERT_UNKNOWN_CA") || reason.contains("ALERT_BAD_CERTIFICATE")
                || reason.contains("ALERT_CERTIFICATE")
            {
                text += settings.certificateFile.map { " (the server refused the client certificate sslcert=\($0))" }
                    ?? " (the server wants a client certificate: set sslcert and sslkey)"
            }
            return text
        }
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}
