// `Pipeline.run()` returns a `RunReport`, and a pipeline is built from the contracts' types: users of the
// runtime get both with it.
@_exported import SluiceInterfaces
@_exported import SluiceReport
