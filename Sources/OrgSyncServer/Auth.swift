import HTTPTypes
import Hummingbird

/// Bearer-token authentication with roles. Tokens are compared in constant time (no early
/// exit on the first differing byte, every configured token compared) and never logged.
public struct Authenticator: Sendable {
    public typealias Role = BrokerConfiguration.Role
    let enabled: Bool
    let tokens: [(name: String, role: Role, secret: [UInt8])]

    public init(configuration: BrokerConfiguration, environment: [String: String]) {
        enabled = configuration.auth.enabled
        tokens = configuration.resolvedTokens(environment: environment)
    }

    /// Checks the request's `Authorization: Bearer …` header against `role` (admin may do
    /// everything produce may). Returns the token's name (for logs), or nil with auth off.
    ///
    /// - Throws: ``APIError`` 401 without a valid token, 403 with a token of a lesser role.
    @discardableResult
    public func authorize(_ request: Request, _ role: Role) throws -> String? {
        guard enabled else { return nil }
        guard let header = request.headers[.authorization] else {
            throw APIError.unauthorized("missing bearer token (Authorization: Bearer <token>)")
        }
        let match = try identify(header)
        guard match.role >= role else {
            throw APIError.forbidden("this token's role (\(match.role.rawValue)) may not do this; it needs \(role.rawValue)")
        }
        return match.name
    }

    /// What the request may do, for `GET /v1/whoami`: `.admin` with auth off (anyone may do
    /// everything), nil with auth on and no `Authorization` header, else the token's role.
    ///
    /// - Throws: ``APIError`` 401 when a header is presented but is not a known bearer token.
    public func role(of request: Request) throws -> Role? {
        guard enabled else { return .admin }
        guard let header = request.headers[.authorization] else { return nil }
        return try identify(header).role
    }

    /// Whether requests need a token at all.
    public var isEnabled: Bool { enabled }

    /// The configured token an `Authorization` header presents; every token is compared.
    private func identify(_ header: String) throws -> (name: String, role: Role) {
        let prefix = "Bearer "
        guard header.count > prefix.count, header.prefix(prefix.count).lowercased() == prefix.lowercased() else {
            throw APIError.unauthorized("the Authorization header must be 'Bearer <token>'")
        }
        let presented = Array(header.utf8.dropFirst(prefix.utf8.count))
        var match: (name: String, role: Role)?
        for token in tokens where Authenticator.constantTimeEqual(presented, token.secret) {
            match = (token.name, token.role)
        }
        guard let match else { throw APIError.unauthorized("unknown token") }
        return match
    }

    /// Equal length and bytes, in time that depends only on the lengths.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        let count = max(a.count, b.count)
        for i in 0..<count {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            difference |= x ^ y
        }
        return difference == 0
    }
}
