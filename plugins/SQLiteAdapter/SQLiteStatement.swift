import GRDB
import GRDBSQLite

/// One value bound to a statement's parameter.
enum SQLiteBinding: Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
}

/// A data statement of the adapter (``TableStatement``: insert, upsert, delete), run straight
/// through SQLite's C API on the connection GRDB opened.
///
/// Two reasons not to use GRDB's statements here: GRDB binds a text with length -1, so SQLite
/// stops at the first NUL and a JSON string holding `\u0000` was cut short in the target
/// without a word; and its arguments convert every value through an existential, where a wide
/// table's upsert binds two values per column for every entry. The adapter's schema changes and
/// its offsets row stay with GRDB (which must see the schema change).
///
/// Belongs to its connection: made, run and released on the database's queue (inside its write
/// closures), and released before the connection closes.
final class SQLiteStatement {
    let sql: String
    private let handle: OpaquePointer
    private let connection: OpaquePointer
    private let parameterCount: Int

    /// Compiles `sql` on `db`'s connection; SQLite's error (as GRDB's ``DatabaseError``) if it
    /// does not compile.
    init(sql: String, _ db: Database) throws(DatabaseError) {
        guard let connection = db.sqliteConnection else {
            throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "the connection is closed", sql: sql)
        }
        var handle: OpaquePointer?
        let code = sqlite3_prepare_v3(connection, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &handle, nil)
        guard code == SQLITE_OK, let handle else {
            sqlite3_finalize(handle)
            throw Self.error(connection, code: code, sql: sql)
        }
        self.sql = sql
        self.handle = handle
        self.connection = connection
        parameterCount = Int(sqlite3_bind_parameter_count(handle))
    }

    deinit { sqlite3_finalize(handle) }

    /// Binds `values` to the parameters in order and runs the statement to its end.
    func execute(_ values: [SQLiteBinding]) throws(DatabaseError) {
        defer { sqlite3_reset(handle) }
        guard values.count == parameterCount else {
            throw DatabaseError(
                resultCode: .SQLITE_RANGE, message: "\(values.count) values for \(parameterCount) parameters", sql: sql)
        }
        for (index, value) in values.enumerated() {
            // index < parameterCount, which came from a CInt.
            let parameter = CInt(truncatingIfNeeded: index + 1)
            let code: CInt
            switch value {
            case .null: code = sqlite3_bind_null(handle, parameter)
            case .integer(let number): code = sqlite3_bind_int64(handle, parameter, number)
            case .real(let number): code = sqlite3_bind_double(handle, parameter, number)
            case .text(let text): code = Self.bind(text, handle, parameter)
            }
            guard code == SQLITE_OK else { throw Self.error(connection, code: code, sql: sql) }
        }
        var code = sqlite3_step(handle)
        while code == SQLITE_ROW { code = sqlite3_step(handle) }
        guard code == SQLITE_DONE else { throw Self.error(connection, code: code, sql: sql) }
    }

    /// Binds the text's UTF-8 bytes, all of them (a NUL inside the text included); SQLite copies
    /// them. Longer than SQLite's lengths go is SQLITE_TOOBIG, as SQLite itself would say.
    private static func bind(_ text: String, _ handle: OpaquePointer, _ parameter: CInt) -> CInt {
        var text = text
        return text.withUTF8 { bytes -> CInt in
            guard let length = CInt(exactly: bytes.count) else { return SQLITE_TOOBIG }
            guard let base = bytes.baseAddress, length > 0 else {
                return sqlite3_bind_text(handle, parameter, "", 0, transient)
            }
            return base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                sqlite3_bind_text(handle, parameter, $0, length, transient)
            }
        }
    }

    /// SQLite's `SQLITE_TRANSIENT`: it copies the bytes before the call returns.
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    /// The connection's error as GRDB reports one: the extended code (the connection has
    /// extended result codes on), SQLite's message and the statement.
    private static func error(_ connection: OpaquePointer, code: CInt, sql: String) -> DatabaseError {
        let extended = sqlite3_extended_errcode(connection)
        // The connection's code belongs to this failure when their primary codes agree (a
        // binding error leaves the connection's last error as it was).
        guard (extended & 0xFF) == (code & 0xFF) else { return DatabaseError(resultCode: ResultCode(rawValue: code), sql: sql) }
        return DatabaseError(
            resultCode: ResultCode(rawValue: extended), message: sqlite3_errmsg(connection).map { String(cString: $0) }, sql: sql)
    }
}
