import Logging
import NIOCore
import OrgSyncPluginAPI
import PostgresNIO

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Opens every connection of a `postgres` link, the batch connection and the liveness check's
/// alike: one place that reads the TLS files (``PostgresTLSContext``), connects, and turns a TLS
/// failure into a ``Failure`` whose message says why in an operator's words.
enum PostgresConnector {
    /// A connection that could not be opened because of TLS (or its files); a connection
    /// failure of the link, never a rejected entry.
    struct Failure: Error, Sendable, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// Connects as `settings` says, named `applicationName` in the server's activity view; the
    /// whole of it — TCP connect, TLS, startup and authentication — bounded by `connectTimeoutMs`
    /// (postgres-nio's deadline covers the session's start, not only the TCP connect: a server
    /// that accepts and then says nothing fails it).
    static func connect(
        settings: PostgresAdapterSettings, applicationName: String, startupParameters: [(String, String)] = [],
        connectTimeoutMs: Int, id: Int, logger: Logger
    ) async throws -> PostgresConnection {
        let tls: PostgresConnection.Configuration.TLS
        do {
            tls = try PostgresTLSContext.make(settings.tls)
        } catch {
            // At start the same check stopped the broker; a file that went away since suspends the link.
            throw Failure(message: "TLS: \(error)")
        }
        var configuration = PostgresConnection.Configuration(
            host: settings.host, port: settings.port, username: settings.user, password: settings.password,
            database: settings.database, tls: tls)
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeoutMs))
        configuration.options.additionalStartupParameters = [("application_name", applicationName)] + startupParameters
        do {
            return try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
        } catch {
            if let error = error as? PSQLError, let underlying = error.underlying as? ChannelError, case .connectTimeout = underlying {
                throw Failure(message: "no session within connect_timeout_ms=\(connectTimeoutMs) (TCP connect, TLS, startup and authentication)")
            }
            guard let failure = PostgresTLSFailure(error) else { throw error }
            let certificate =
                failure.needsServerCertificate
                ? await PostgresServerCertificate.fetchValidity(host: settings.host, port: settings.port, timeoutMs: connectTimeoutMs)
                : nil
            let message = failure.message(settings: settings.tls, host: settings.host, serverCertificate: certificate, now: Date())
            throw Failure(message: message)
        }
    }
}
