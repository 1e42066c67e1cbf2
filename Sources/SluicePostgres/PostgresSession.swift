import Foundation
import Logging
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceInterfaces

/// Where a PostgreSQL server is and who to be there, parsed from a URL.
///
/// `postgres://user:password@host:port/database`, with `?host=/path/to/socket/dir` for a Unix socket
/// (as libpq). Missing parts come from `PGUSER`, `PGPASSWORD`, `PGHOST`, `PGPORT` and `PGDATABASE`, then
/// `postgres@localhost:5432/postgres`.
public struct PostgresLocation: Sendable, Hashable, CustomStringConvertible {
    /// Host name, or a directory holding the server's Unix socket.
    public var host: String
    /// TCP port (also names the Unix socket file).
    public var port: Int
    /// User name.
    public var user: String
    /// Password, if any.
    public var password: String?
    /// Database name.
    public var database: String

    /// Parses a `postgres://` or `postgresql://` URL.
    /// - Throws: ``SluiceError`` (`.config`) naming what is wrong.
    public init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        var rest: Substring
        if url.hasPrefix("postgres://") {
            rest = url.dropFirst(11)
        } else if url.hasPrefix("postgresql://") {
            rest = url.dropFirst(13)
        } else {
            throw SluiceError(.config, "'\(url)' is not a postgres:// URL")
        }
        var query: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                query[String(kv[0])] = kv.count > 1 ? Self.decode(kv[1]) : ""
            }
            rest = rest[..<q]
        }
        var db = ""
        if let slash = rest.firstIndex(of: "/") {
            db = Self.decode(rest[rest.index(after: slash)...])
            rest = rest[..<slash]
        }
        var userPart: Substring?
        if let at = rest.lastIndex(of: "@") {
            userPart = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }
        var hostPart = String(rest)
        var portValue: Int?
        if let colon = hostPart.lastIndex(of: ":"), !hostPart.hasSuffix("]") {
            guard let p = Int(hostPart[hostPart.index(after: colon)...]), p > 0, p < 65536 else {
                throw SluiceError(.config, "bad port in '\(url)'")
            }
            portValue = p
            hostPart = String(hostPart[..<colon])
        }
        if hostPart.hasPrefix("[") && hostPart.hasSuffix("]") { hostPart = String(hostPart.dropFirst().dropLast()) }
        if let u = userPart {
            let up = u.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = Self.decode(up[0])
            password = up.count > 1 ? Self.decode(up[1]) : nil
        } else {
            user = ""
        }
        if user.isEmpty { user = query["user"] ?? environment["PGUSER"] ?? "postgres" }
        if password == nil { password = query["password"] ?? environment["PGPASSWORD"] }
        host =
            query["host"]
            ?? (hostPart.isEmpty
                ? Self.decode(Substring(environment["PGHOST"] ?? "localhost")) : Self.decode(Substring(hostPart)))
        if let p = query["port"] {
            guard let v = Int(p) else { throw SluiceError(.config, "bad port '\(p)' in '\(url)'") }
            portValue = v
        }
        port = portValue ?? environment["PGPORT"].flatMap { Int($0) } ?? 5432
        database = db.isEmpty ? (query["dbname"] ?? environment["PGDATABASE"] ?? user) : db
    }

    /// Whether `host` names a Unix socket directory.
    public var isUnixSocket: Bool { host.hasPrefix("/") }

    /// `postgres://user@host:port/database` (no password).
    public var description: String {
        isUnixSocket
            ? "postgres://\(user)@/\(database)?host=\(host)&port=\(port)"
            : "postgres://\(user)@\(host):\(port)/\(database)"
    }

    private static func decode(_ s: Substring) -> String { String(s).removingPercentEncoding ?? String(s) }

    var configuration: PostgresConnection.Configuration {
        var c =
            isUnixSocket
            ? PostgresConnection.Configuration(
                unixSocketPath: "\(host)/.s.PGSQL.\(port)", username: user, password: password, database: database)
            : PostgresConnection.Configuration(
                host: host, port: port, username: user, password: password, database: database, tls: .disable)
        c.options.connectTimeout = .seconds(10)
        return c
    }
}

/// An error PostgresNIO threw that is not a `PSQLError`, kept as text (its type need not be `Sendable`).
struct PostgresClientFailure: Error, Sendable, CustomStringConvertible {
    var text: String
    var description: String { text }
}

extension SluiceError {
    /// Converts any error thrown by PostgresNIO (or passes a ``SluiceError`` through): the server's message
    /// with its SQLSTATE and, apart, its DETAIL and HINT (which may quote row values); a lost connection has
    /// code ``SluiceError/Code/connectionLost``. The kind says what the runtime may do: retry (a lost
    /// connection, a server starting or stopping, serialization failures, deadlocks, lock timeouts, cancels,
    /// insufficient resources), bisect
    /// (constraints and bad values, SQLSTATE classes 22 and 23), or stop.
    static func postgres(_ error: any Error, file: String = #fileID, line: Int = #line) -> SluiceError {
        if let f = error as? SluiceError { return f }
        guard let e = error as? PSQLError else {
            return SluiceError(
                .sink, "\(error)", underlying: PostgresClientFailure(text: "\(error)"), file: file, line: line)
        }
        if let info = e.serverInfo {
            let state = info[.sqlState]
            var detail = info[.detail]
            if let h = info[.hint] { detail = (detail.map { $0 + " " } ?? "") + "(hint: \(h))" }
            // 57P01 admin_shutdown (pg_terminate_backend), 08xxx connection exceptions: the session is gone.
            let lost = state == "57P01" || state?.hasPrefix("08") == true
            return SluiceError(
                lost ? .connectionLost : .sink, info[.message] ?? "server error",
                kind: kind(sqlState: state, lost: lost),
                sqlState: state, detail: detail, underlying: e, file: file, line: line)
        }
        return SluiceError(
            .connectionLost, connectionReason(e), kind: .retry, errno: connectionErrno(e), underlying: e, file: file,
            line: line)
    }

    /// Whether PostgreSQL (or the connection to it) reported this error, as opposed to the sink's own checks:
    /// every error ``postgres(_:file:line:)`` makes carries the client's error.
    var fromPostgres: Bool { underlying is PSQLError || underlying is PostgresClientFailure }

    /// Whether the connection this error came from is gone (it must be opened again).
    var connectionLost: Bool { code == .connectionLost }

    /// What the runtime may do about a failure with this SQLSTATE.
    static func kind(sqlState: String?, lost: Bool) -> Kind {
        if lost { return .retry }
        guard let s = sqlState else { return .fatal }
        switch s {
        case "40001", "40P01", "55P03", "57014": return .retry  // serialization, deadlock, lock, cancel
        case "57P03": return .retry  // cannot connect now: the server is starting up or shutting down
        case _ where s.hasPrefix("53"): return .retry  // insufficient resources
        case _ where s.hasPrefix("23") || s.hasPrefix("22"): return .bisect  // constraint, bad value
        default: return .fatal
        }
    }

    /// The errno PostgresNIO wraps in a connection error, if any.
    static func connectionErrno(_ e: PSQLError) -> Int32? {
        guard let u = e.underlying else { return nil }
        let text = "\(u)"
        guard let r = text.range(of: "(errno: ", options: .backwards),
            let end = text[r.upperBound...].firstIndex(of: ")")
        else { return nil }
        return Int32(text[r.upperBound..<end])
    }

    /// The reason a connection failed, as short as it can be said: the system's words for the socket error
    /// PostgresNIO wraps (`Connection refused`), else its own description.
    static func connectionReason(_ e: PSQLError) -> String {
        if let code = connectionErrno(e) { return String(cString: strerror(code)) }
        guard let u = e.underlying else { return "PostgreSQL connection: \(e.code)" }
        return "PostgreSQL connection: \(e.code) (\(u))"
    }

    /// The same error as a sink failure of the PostgreSQL sink (`PostgreSQL: …`), keeping its kind.
    var asSinkFailure: SluiceError {
        var e = self
        if !e.message.hasPrefix("PostgreSQL") { e.message = "PostgreSQL: " + e.message }
        return e
    }

    /// The same error made fatal, with `context` before its message (`PostgreSQL: purging missing records: …`).
    func fatal(_ context: String) -> SluiceError {
        var e = self
        e.message = context + e.message
        e.kind = .fatal
        if e.code == .connectionLost { e.code = .sink }
        return e
    }
}

/// One PostgreSQL connection, with async calls whose errors are ``SluiceError``s.
///
/// ``with(_:logger:_:)`` scopes a connection to a closure, as postgres-nio's `withConnection`: it is closed
/// when the closure returns or throws. A session opened with ``connect(_:logger:)`` is closed by its owner.
public struct PostgresSession: Sendable {
    /// Where it is connected.
    public let location: PostgresLocation
    let connection: PostgresConnection
    /// Where the connection logs (the caller's; the executable bootstraps the backend).
    let logger: Logger

    /// Connects, logging to `logger`.
    /// - Throws: ``SluiceError`` (`cannot connect to …`).
    public static func connect(
        _ location: PostgresLocation, logger: Logger = Logger(label: "sluice.postgres")
    ) async throws -> PostgresSession {
        do {
            let c = try await PostgresConnection.connect(
                configuration: location.configuration, id: 1, logger: logger)
            return PostgresSession(location: location, connection: c, logger: logger)
        } catch {
            var f = SluiceError.postgres(error)
            f.message = "cannot connect to \(location): \(f.message)"
            throw f
        }
    }

    /// Connects, runs `body` with the session and closes it, whether `body` returns or throws.
    /// - Throws: ``SluiceError`` when it cannot connect; what `body` throws.
    public static func with<T: Sendable>(
        _ location: PostgresLocation, logger: Logger = Logger(label: "sluice.postgres"),
        _ body: (PostgresSession) async throws -> T
    ) async throws -> T {
        let s = try await connect(location, logger: logger)
        do {
            let r = try await body(s)
            await s.close()
            return r
        } catch {
            await s.close()
            throw error
        }
    }

    /// Whether the connection is closed (the server went away or ``close()`` was called).
    public var isClosed: Bool { connection.isClosed }

    /// Closes the connection (a lost one is already closed).
    public func close() async {
        let c = connection
        _ = try? await Self.bounded(by: c) { try await c.close() }
    }

    /// Runs one statement and discards its rows.
    /// - Throws: ``SluiceError``.
    public func execute(_ sql: String, _ binds: PostgresBindings = PostgresBindings()) async throws {
        let (c, logger) = (connection, logger)
        let query = PostgresQuery(unsafeSQL: sql, binds: binds)
        try await Self.bounded(by: c) {
            do {
                let rows = try await c.query(query, logger: logger)
                for try await _ in rows {}
            } catch { throw SluiceError.postgres(error) }
        }
    }

    /// Runs one statement and returns its rows.
    /// - Throws: ``SluiceError``.
    public func rows(_ sql: String, _ binds: PostgresBindings = PostgresBindings()) async throws -> [PostgresRow] {
        let (c, logger) = (connection, logger)
        let query = PostgresQuery(unsafeSQL: sql, binds: binds)
        return try await Self.bounded(by: c) {
            do { return try await c.query(query, logger: logger).collect() } catch { throw SluiceError.postgres(error) }
        }
    }
}
