import NIOCore
import PostgresNIO
import SluiceCore

// The one place that works around PostgresNIO's text-only COPY: pinned by
// `Tests/SluicePostgresTests/PostgresBinaryCopyTests.swift`, which loads binary data through it and fails
// when a PostgresNIO version builds the statement differently. Upstream fix: a binary
// `PostgresCopyFromFormat` (1.33.2 keeps the format a struct over a private enum so that one can be added).
extension PostgresSession {
    /// Runs `statement` (a `COPY … FROM STDIN` with the options it needs, e.g. `(FORMAT binary)`) and sends
    /// `data` as its input, in pieces of at most 1 MiB.
    ///
    /// PostgresNIO 1.33 builds the `COPY` statement itself and offers only `FORMAT text`; it writes the table
    /// name it is given after `COPY "` unchanged. The statement is passed through that parameter, ending in a
    /// comment that absorbs the text options PostgresNIO appends. The integration tests load binary data
    /// through this path, so a PostgresNIO that builds the statement differently fails them.
    /// - Throws: ``SluiceError``.
    public func copyIn(statement: String, data: ByteBuffer) async throws {
        precondition(statement.hasPrefix("COPY \""), "copyIn statement must start with COPY \"")
        precondition(!statement.contains("\n"), "copyIn statement must be one line")
        let passThrough = String(statement.dropFirst(6)) + " --"
        let (connection, logger) = (self.connection, self.logger)
        try await Self.bounded(by: connection) {
            do {
                try await connection.copyFrom(table: passThrough, logger: logger) { writer in
                    var rest = data
                    while rest.readableBytes > 0 {
                        let piece = rest.readSlice(length: min(rest.readableBytes, 1 << 20))!
                        try await writer.write(piece)
                    }
                }
            } catch { throw SluiceError.postgres(error) }
        }
    }
}
