import OrgSyncBroker
import HTTPTypes
import Hummingbird

/// Bearer-token authentication with roles. Tokens are compared in constant time (no early
/// exit on the first differing byte, every configured token compared) and never logged.
public struct Authenticator: Sendable {
    public typealias Role = BrokerConfiguration.Role
    let enabled: Bool
    let tokens: [(name: String, role: Role, secret: [UInt8])]
    /// `auth.client_certificates`: verified client certificates by subject common name.
    let certificates: [BrokerConfiguration.ClientCertificate]

    public init(configuration: BrokerConfiguration, environment: [String: String]) {
        enabled = configuration.auth.enabled
        tokens = configuration.resolvedTokens(environment: environment)
        certificates = configuration.auth.clientCertificates
    }

    /// Checks the request's credentials against `role` (admin may do everything produce may):
    /// its `Authorization: Bearer …` header, or — with no header — the client certificate of
    /// its TLS connection, when `auth.client_certificates` lists its common name. Returns the
    /// token's or certificate's name (for logs), or nil with auth off.
    ///
    /// - Throws: ``APIError`` 401 without valid credentials, 403 with those of a lesser role.
    @discardableResult
    public func authorize(_ request: Request, _ context: BrokerRequestContext, _ role: Role) async throws -> String? {
        guard enabled else { return nil }
        guard let match = try await identify(request, context) else {
            throw APIError.unauthorized(certificates.isEmpty
                ? "missing bearer token (Authorization: Bearer <token>)"
                : "missing bearer token (Authorization: Bearer <token>) or a listed client certificate")
        }
        guard match.role >= role else {
            throw APIError.forbidden("this \(match.kind)'s role (\(match.role.rawValue)) may not do this; it needs \(role.rawValue)")
        }
        return match.name
    }

    /// What the request may do, for `GET /v1/whoami`: `.admin` with auth off (anyone may do
    /// everything), nil with auth on and no credentials, else the token's or certificate's role.
    ///
    /// - Throws: ``APIError`` 401 when credentials are presented but not known.
    public func role(of request: Request, _ context: BrokerRequestContext) async throws -> Role? {
        guard enabled else { return .admin }
        return try await identify(request, context)?.role
    }

    /// Whether requests need credentials at all.
    public var isEnabled: Bool { enabled }

    /// The token of the `Authorization` header (the certificate is not consulted when a header
    /// is present), else the listed client certificate, else nil.
    private func identify(
        _ request: Request, _ context: BrokerRequestContext
    ) async throws -> (name: String, role: Role, kind: String)? {
        if let header = request.headers[.authorization] {
            let match = try identify(header)
            return (match.name, match.role, "token")
        }
        guard !certificates.isEmpty, let commonName = await peerCommonName(of: context.channel) else { return nil }
        guard let listed = certificates.first(where: { $0.commonName == commonName }) else {
            throw APIError.unauthorized("the client certificate's common name is not listed in auth.client_certificates")
        }
        return (listed.name, listed.role, "certificate")
    }

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

/// Lets a request through to the routes of its group only with credentials of `role` or
/// more (``Authenticator/authorize(_:_:_:)``): the API's routes are grouped by the role they
/// need, so no handler checks credentials itself.
struct RequireRole: RouterMiddleware {
    typealias Context = BrokerRequestContext
    let authenticator: Authenticator
    let role: Authenticator.Role

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await authenticator.authorize(request, context, role)
        return try await next(request, context)
    }
}
