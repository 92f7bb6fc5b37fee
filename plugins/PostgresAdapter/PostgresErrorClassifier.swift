import NIOCore
import OrgSyncPluginAPI
import PostgresNIO

/// Turns what postgres-nio throws into an ``AdapterError`` kind. Messages carry the server's
/// own text and SQLSTATE, never the connection settings' password.
enum PostgresErrorClassifier {
    /// Where in a batch a statement failed; decides what a data error means.
    enum Phase: Sendable {
        /// Connecting, BEGIN, the offsets row, COMMIT, a probe: not about one entry.
        case session
        /// DDL (CREATE TABLE, ADD COLUMN) needed by the entry at `offset`.
        case schema(Offset)
        /// The entry's own INSERT/UPDATE/DELETE.
        case entry(Offset)
    }

    static func classify(_ error: any Error, phase: Phase, context: String) -> AdapterError {
        if let error = error as? AdapterError { return error }
        if error is CancellationError { return .connection("\(context): cancelled") }
        if let error = error as? PostgresConnector.Failure { return .connection("\(context): \(error.message)") }
        let server: ServerError
        if let error = error as? PSQLError {
            guard error.code == .server, let sqlState = error.serverInfo?[.sqlState] else {
                return .connection("\(context): \(clientMessage(error))")
            }
            server = ServerError(sqlState: sqlState, message: error.serverInfo?[.message], detail: error.serverInfo?[.detail])
        } else if let error = error as? PostgresError {
            // What postgres-nio's prepared-statement API (PreparedQuery) throws.
            guard case .server(let fields) = error, let sqlState = fields.fields[.sqlState] else {
                return .connection("\(context): \(error.description)")
            }
            server = ServerError(sqlState: sqlState, message: fields.fields[.message], detail: fields.fields[.detail])
        } else {
            return .connection("\(context): \(String(describing: error))")
        }
        let sqlState = server.sqlState
        let message = "\(context): \(server.text)"
        switch kind(sqlState: sqlState, phase: phase) {
        case .connection: return .connection(message, targetCode: sqlState)
        case .retryable: return .retryable(message, targetCode: sqlState)
        case .rejected(let offset): return .rejected(offset: offset, message, targetCode: sqlState)
        case .positionConflict, .fenced: return .connection(message, targetCode: sqlState)  // the rule table never says so
        }
    }

    /// The rule table, by SQLSTATE (https://www.postgresql.org/docs/15/errcodes-appendix.html).
    static func kind(sqlState: String, phase: Phase) -> AdapterError.Kind {
        let errorClass = String(sqlState.prefix(2))
        switch sqlState {
        // Transient conflicts: the same batch will go through later.
        case "40001", "40P01", "55P03": return .retryable
        // Admin shutdown, crash shutdown, cannot connect now, statement timeout / cancel.
        case "57P01", "57P02", "57P03", "57P04", "57014": return .connection
        // No privilege, missing database or schema: the operator has to act; suspend, don't dead-letter.
        case "42501", "3D000", "3F000": return .connection
        default: break
        }
        switch errorClass {
        // Connection exception, invalid authorization, insufficient resources (disk full, too
        // many connections), operator intervention, system error.
        case "08", "28", "53", "57", "58": return .connection
        default: break
        }
        switch phase {
        case .session:
            return .connection
        case .schema(let offset):
            // Someone else created the same table/column meanwhile: reload and retry.
            if ["42P07", "42701", "23505", "42P06"].contains(sqlState) { return .retryable }
            if ["22", "23", "42", "54"].contains(errorClass) { return .rejected(offset: offset) }
            return .connection
        case .entry(let offset):
            // The table or column went away under our cached shape: reload and retry.
            if ["42P01", "42703"].contains(sqlState) { return .retryable }
            if ["22", "23", "42", "54"].contains(errorClass) { return .rejected(offset: offset) }
            return .connection
        }
    }

    /// An error the server sent, whichever of postgres-nio's error types carried it.
    struct ServerError {
        var sqlState: String
        var message: String?
        var detail: String?

        /// The server's message, with its detail.
        var text: String {
            var text = message ?? "server error"
            if let detail, !detail.isEmpty { text += " (\(detail))" }
            return text
        }
    }

    /// A client-side failure: refused, reset, closed, TLS, protocol. Never the configuration.
    static func clientMessage(_ error: PSQLError) -> String {
        var text = "\(error.code)"
        if let underlying = error.underlying { text += ": \(String(describing: underlying))" }
        return text
    }
}
