import Foundation
import HTTPTypes
import Hummingbird
import OrgSyncAPI
import HummingbirdTesting
import NIOCore
@testable import OrgSyncBroker
@testable import OrgSyncServer
import Testing

@Suite struct StatusPageTests {
    /// The page and its script and style are served without a token (they hold no data), each
    /// with its content type and a policy that allows no inline or foreign script.
    @Test(arguments: [
        ("/", "text/html; charset=utf-8", #"<script src="/ui/app.js" defer></script>"#),
        ("/ui/app.js", "text/javascript; charset=utf-8", "/v1/links"),
        ("/ui/app.css", "text/css; charset=utf-8", ".badge"),
    ])
    func pageAndAssetsAreServedOpen(path: String, contentType: String, marker: String) async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            try await client.execute(uri: path, method: .get) { response in
                #expect(response.status == .ok, "\(path)")
                #expect(response.headers[.contentType] == contentType, "\(path)")
                #expect(response.headers[.contentSecurityPolicy]?.contains("script-src 'self'") == true, "\(path)")
                #expect(response.headers[.xContentTypeOptions] == "nosniff", "\(path)")
                #expect(String(buffer: response.body).contains(marker), "\(path)")
            }
        }
        #expect(t.end == 0)
    }

    /// The script renders values as text only and keeps the token out of URLs and logs.
    @Test func theScriptNeverParsesDataAsHTMLNorLeaksTheToken() {
        for forbidden in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "console.log", "localStorage"] {
            #expect(!statusPageScript.contains(forbidden), "the script uses \(forbidden)")
        }
        #expect(statusPageScript.contains(#"headers["Authorization"] = "Bearer " + token"#))
        #expect(statusPageScript.contains("sessionStorage"))
        #expect(!statusPageHTML.contains("<script>"), "inline script would be refused by the page's own policy")
        #expect(!statusPageHTML.contains("style="), "inline style would be refused by the page's own policy")
        // No http(s) URL in the page or the script: nothing is loaded from another origin. The
        // SVG namespace name (which createElementNS needs for the charts) is a name, not a load.
        for text in [statusPageHTML, statusPageScript, statusPageStyle] {
            let unnamespaced = text.replacingOccurrences(of: #""http://www.w3.org/2000/svg""#, with: "")
            #expect(!unnamespaced.contains("http://") && !unnamespaced.contains("https://"))
        }
        #expect(statusPageScript.components(separatedBy: "http://www.w3.org/2000/svg").count == 2, "the namespace once, as a constant")
    }

    /// The charts and the overview's rejected and dead-letter columns are in the page, each
    /// with a test id; the charts are drawn by the page's own script from the samples routes,
    /// as SVG images with an accessible name.
    @Test func thePageHasTheChartsAndTheDeadLetterColumns() {
        for testid in ["overview-rejected", "overview-dead-letters", "chart-lag", "chart-applied", "state-timeline",
                       "chart-appended", "timeline-event"] {
            #expect(statusPageHTML.contains(#"data-testid="\#(testid)""#) || statusPageScript.contains(#""\#(testid)""#), "\(testid)")
        }
        for testid in ["stream-charts", "detail-charts", "state-legend"] {
            #expect(statusPageHTML.contains(#"data-testid="\#(testid)""#), "\(testid)")
        }
        #expect(statusPageScript.contains(#""/samples?window_ms=""#))
        #expect(statusPageScript.contains(#"role: "img", "aria-label": summary"#), "every chart is an image with a name")
        #expect(statusPageScript.contains(#"createElementNS(SVG_NS"#), "drawn as inline SVG by the page itself")
        #expect(!statusPageHTML.contains("<script src=\"http"), "no script from elsewhere")
    }

    @Test func whoamiAnswersTheTokensRole() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            for (token, role) in [(nil, "none"), (TestBroker.produceToken, "produce"), (TestBroker.adminToken, "admin")] as [(String?, String)] {
                try await client.execute(uri: "/v1/whoami", method: .get, headers: headers(token, nil)) { response in
                    #expect(response.status == .ok)
                    let body = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any]
                    #expect(body?["role"] as? String == role)
                    #expect(body?["auth_enabled"] as? Bool == true)
                    #expect(!String(buffer: response.body).contains(token ?? "\u{0}"), "the token must not be echoed")
                }
            }
            var wrong = HTTPFields()
            wrong[.authorization] = "Bearer not-a-token-0123456789"
            try await client.execute(uri: "/v1/whoami", method: .get, headers: wrong) { response in
                #expect(response.status == .unauthorized)
                #expect(errorCode(response) == "unauthorized")
            }
            wrong[.authorization] = "Basic YWxhZGRpbjpvcGVuc2VzYW1l"
            try await client.execute(uri: "/v1/whoami", method: .get, headers: wrong) { response in
                #expect(response.status == .unauthorized)
            }
        }
    }

    @Test func whoamiWithAuthOffIsAdmin() async throws {
        let t = try TestBroker(yaml: "auth: { enabled: false }\nstreams: [ { name: events } ]\n")
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/whoami", method: .get) { response in
                #expect(response.status == .ok)
                let body = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any]
                #expect(body?["role"] as? String == "admin")
                #expect(body?["auth_enabled"] as? Bool == false)
            }
        }
    }

    /// Every route the router answers is described in the OpenAPI document, with the
    /// methods it answers, and nothing else is.
    @Test func theOpenAPIDocumentDescribesEveryRoute() {
        let paths = openAPIPaths(openAPIDocument)
        for route in APIRoutes.all {
            let methods = Set(route.methods.map { $0.lowercased() })
            #expect(paths[route.pattern] == methods, "\(route.pattern): the document says \(paths[route.pattern] ?? []), the router \(methods)")
        }
        #expect(Set(paths.keys) == Set(APIRoutes.all.map(\.pattern)), "the document names a path the router does not answer")
    }

    /// The route table is the router's: each route answers its methods, HEAD too where GET is
    /// (no 405, no "no route"), and any other method gets 405 with an Allow header listing them.
    @Test func otherMethodsGet405WithAllow() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            for route in APIRoutes.all {
                let uri = route.path(["stream": "events", "link": "nolink", "offset": "1"])
                for method in answeredMethods(route) {
                    try await client.execute(uri: uri, method: method, headers: headers(TestBroker.adminToken)) { response in
                        #expect(response.status != .methodNotAllowed, "\(method) \(uri)")
                        #expect(!String(buffer: response.body).contains("no route"), "\(method) \(uri) is not routed")
                    }
                }
                for method in [HTTPRequest.Method.delete, .put, .patch] {
                    try await client.execute(uri: uri, method: method, headers: headers(TestBroker.adminToken)) { response in
                        #expect(response.status == .methodNotAllowed, "\(method) \(uri)")
                        #expect(response.headers[.allow] == answeredMethods(route).map(\.rawValue).joined(separator: ", "))
                        #expect(errorCode(response) == "method_not_allowed")
                    }
                }
            }
            try await client.execute(uri: "/v1/nothing/here", method: .get, headers: headers(TestBroker.adminToken)) { response in
                #expect(response.status == .notFound)
                #expect(errorCode(response) == "not_found")
            }
        }
        #expect(t.end == 0)
    }
}

/// The document's paths and their methods, read from its two-space indented `paths:` block
/// (enough for this document; the schemathesis run in CI reads it with a real parser).
func openAPIPaths(_ document: String) -> [String: Set<String>] {
    var result: [String: Set<String>] = [:]
    var inPaths = false
    var current: String?
    for line in document.split(separator: "\n", omittingEmptySubsequences: false) {
        if line == "paths:" { inPaths = true; continue }
        guard inPaths else { continue }
        if !line.isEmpty, !line.hasPrefix(" ") { break }
        if line.hasPrefix("  /"), !line.hasPrefix("   "), line.hasSuffix(":") {
            current = String(line.dropFirst(2).dropLast())
            result[current ?? ""] = []
        } else if let current, line.hasPrefix("    "), !line.hasPrefix("     ") {
            let key = line.dropFirst(4).split(separator: ":").first.map(String.init) ?? ""
            if ["get", "post", "put", "delete", "patch", "head"].contains(key) { result[current, default: []].insert(key) }
        }
    }
    return result
}

@Suite struct ParameterTests {
    /// Offsets and sequence numbers are int64 in the API: a larger value is a 400, not a page
    /// (schemathesis found `before=9223372036854775808` accepted).
    @Test func integerParametersStopAtInt64Max() throws {
        #expect(try parseUInt(nil, name: "before") == nil)
        #expect(try parseUInt("0", name: "before") == 0)
        #expect(try parseUInt("9223372036854775807", name: "before") == UInt64(Int64.max))
        for bad in ["9223372036854775808", "18446744073709551615", "-1", "1.5", "", "abc"] {
            #expect(throws: APIError.self, "\(bad)") { try parseUInt(bad, name: "before") }
        }
    }
}
