import Foundation
import OrgSyncNotifications
import Testing

@Suite struct StandardWebhookSignatureTests {
    /// The example of the Standard Webhooks specification (and of its reference libraries).
    @Test func signsTheSpecificationsExampleAsTheSpecificationDoes() throws {
        let key = try StandardWebhookSignature.key(fromSecret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        let signature = StandardWebhookSignature.signature(
            key: key, id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestampSeconds: 1_614_265_330,
            body: Array(#"{"test": 2432232314}"#.utf8))
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    @Test func aSecretMustBeAStandardWebhooksSecretAndErrorsNeverQuoteIt() {
        #expect(throws: StandardWebhookSignature.SecretError.missingPrefix) {
            try StandardWebhookSignature.key(fromSecret: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        }
        #expect(throws: StandardWebhookSignature.SecretError.notBase64) {
            try StandardWebhookSignature.key(fromSecret: "whsec_not base64!")
        }
        #expect(throws: StandardWebhookSignature.SecretError.size(3)) {
            try StandardWebhookSignature.key(fromSecret: "whsec_YWJj")
        }
        #expect(!"\(StandardWebhookSignature.SecretError.notBase64)".contains("not base64!"))
    }
}
