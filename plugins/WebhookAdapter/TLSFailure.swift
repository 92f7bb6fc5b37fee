import NIOSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Why a TLS connection to the receiver failed, in an operator's words, with the library's own
/// text kept as detail. BoringSSL reports a failure as a stack of reason names
/// (`CERTIFICATE_VERIFY_FAILED`, `TLSV1_ALERT_CERTIFICATE_REQUIRED`, …); swift-nio-ssl checks
/// the host name itself. Pure: the certificate the receiver presented and the time are given.
struct TLSFailure: Sendable, Hashable {
    enum Reason: Sendable, Hashable {
        /// The receiver's certificate did not verify: not issued by a trusted CA, expired or not
        /// yet valid. BoringSSL does not say which; ``message(presented:nowSeconds:host:settings:)``
        /// tells from the certificate the receiver presented.
        case certificateVerifyFailed
        /// The certificate is trusted but names neither the URL's host name nor its address.
        case hostNameMismatch
        /// The receiver wants a client certificate and got none.
        case clientCertificateRequired
        /// The receiver refused the client certificate it got (unknown CA, expired, revoked).
        case clientCertificateRefused
        /// What came back is not TLS (a plain-HTTP receiver behind an https:// URL).
        case notTLS
        /// Any other TLS failure.
        case other
    }

    var reason: Reason
    /// The library's description of the error.
    var detail: String

    /// The TLS failure `error` stands for, or nil when it is not one.
    static func classify(_ error: any Error) -> TLSFailure? {
        let detail = String(describing: error)
        switch error {
        case let error as NIOSSLExtraError:
            return TLSFailure(reason: error == .failedToValidateHostname ? .hostNameMismatch : .other, detail: detail)
        case let error as NIOSSLError:
            switch error {
            case .handshakeFailed(let stack), .shutdownFailed(let stack): return TLSFailure(reason: reason(of: stack), detail: detail)
            default: return TLSFailure(reason: .other, detail: detail)
            }
        case let error as BoringSSLError:
            return TLSFailure(reason: reason(of: error), detail: detail)
        default:
            return nil
        }
    }

    /// BoringSSL's reason names, as its error strings spell them. A name with `ALERT` is an alert
    /// the receiver sent; this side's own verification failure is `CERTIFICATE_VERIFY_FAILED`.
    static func reason(of error: BoringSSLError) -> Reason {
        let text = String(describing: error)
        if text.contains("CERTIFICATE_VERIFY_FAILED") { return .certificateVerifyFailed }
        if text.contains("ALERT_CERTIFICATE_REQUIRED") { return .clientCertificateRequired }
        let refusals = [
            "ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA", "ALERT_CERTIFICATE_UNKNOWN", "ALERT_CERTIFICATE_EXPIRED",
            "ALERT_CERTIFICATE_REVOKED", "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_ACCESS_DENIED",
        ]
        if refusals.contains(where: { text.contains($0) }) { return .clientCertificateRefused }
        if text.contains("WRONG_VERSION_NUMBER") { return .notTLS }
        return .other
    }

    /// `TLS: <reason in words> [<library's text>]`. `presented` is the receiver's certificate as
    /// read after a verification failure (nil when it could not be read); `host` is the URL's.
    func message(presented: PresentedCertificate?, nowSeconds: Int, host: String, settings: WebhookTLSSettings) -> String {
        "TLS: \(words(presented: presented, nowSeconds: nowSeconds, host: host, settings: settings)) [\(detail)]"
    }

    func words(presented: PresentedCertificate?, nowSeconds: Int, host: String, settings: WebhookTLSSettings) -> String {
        switch reason {
        case .certificateVerifyFailed:
            guard let presented else {
                return "certificate verify failed: unknown CA, expired or not yet valid (trusted: \(settings.trustSource))"
            }
            if presented.notValidAfterSeconds < nowSeconds {
                return "certificate expired (not valid after \(Self.time(presented.notValidAfterSeconds)))"
            }
            if presented.notValidBeforeSeconds > nowSeconds {
                return "certificate not yet valid (not valid before \(Self.time(presented.notValidBeforeSeconds)))"
            }
            return "certificate verify failed: unknown CA (\(settings.trustSource))"
        case .hostNameMismatch:
            return "host name does not match the certificate (\(host))"
        case .clientCertificateRequired where settings.certificateFile == nil:
            return "the receiver requires a client certificate; set cert_file and key_file"
        case .clientCertificateRequired, .clientCertificateRefused:
            guard let certificateFile = settings.certificateFile else {
                return "the receiver refused the connection without a client certificate; set cert_file and key_file"
            }
            return "the receiver refused the client certificate (cert_file=\(certificateFile))"
        case .notTLS:
            return "the receiver does not answer in TLS (is it a plain http:// receiver?)"
        case .other:
            return "handshake failed"
        }
    }

    static func time(_ seconds: Int) -> String {
        Date(timeIntervalSince1970: TimeInterval(seconds)).ISO8601Format()
    }
}
