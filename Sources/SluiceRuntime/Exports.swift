// `Pipeline.run()` returns a `RunReport`; users of the runtime get the report types with it.
@_exported import SluiceReport
