import OrgSyncBroker
import OrgSyncServer
import Testing

/// Inputs the `config` and `http` fuzz targets found (Fuzz/README.md), as plain tests; each
/// names its reproducer in `Fuzz/corpus/<target>/`.
@Suite struct ServerFuzzRegressionTests {
    /// Fuzz/corpus/config/regression-sequence-key: `[[]:]`, a mapping whose key is a sequence.
    /// Yams' `load` force-unwraps keys as strings: the loader trapped instead of answering.
    @Test(arguments: ["[[]:]", "{[a]: 1}", "streams:\n  - {{name: x}: 1}", "server: {? [1, 2] : 3}"])
    func aMappingKeyThatIsNotTextIsAnError(_ yaml: String) {
        #expect(throws: ConfigurationError.self) { try BrokerConfiguration.parse(yaml: yaml) }
    }
}
