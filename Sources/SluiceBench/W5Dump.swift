import ArgumentParser
import Foundation
import SluiceWorkloads

/// `sluice-bench generate-w5`: writes the W5 initial and update dumps.
struct GenerateW5: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-w5", abstract: "Write the W5 releases dump and its update dump (gzip).")

    @Option(help: "Releases in the initial dump (1x = 190000).")
    var releases = 190_000

    @Option(help: "Directory for releases.xml.gz and releases-update.xml.gz.")
    var out = "w5"

    func run() throws {
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let g = W5Generator(releases: releases)
        try g.writeInitial(to: out + "/releases.xml.gz")
        try g.writeUpdate(to: out + "/releases-update.xml.gz")
        let c = g.updateCounts()
        print(
            "wrote \(out)/releases.xml.gz (\(releases) releases) and releases-update.xml.gz: "
                + "\(c.changed) changed, \(c.added) new, \(c.deleted) deleted, \(c.reordered) reordered, \(c.same) same"
        )
    }
}
