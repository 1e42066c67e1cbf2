import FuzzSupport
import SluiceConfig
import SluiceCore

// Input: a pipeline file. Properties: parsing ends (libFuzzer's time limit), and an error names the file and
// the line it is about (`fuzz.yaml:3: …`), so a user can find what to fix.
/// libFuzzer's entry point: checks the properties above for one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPipelineYAML(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard let text = String(validating: Array(input), as: UTF8.self) else { return 0 }
    do {
        _ = try PipelineFile.parse(text, file: "fuzz.yaml", baseDirectory: "/base")
    } catch {
        let message = "\(error)"
        if !message.contains("fuzz.yaml") { violated("the error does not name the file: \(message)", input: input) }
    }
    return 0
}
