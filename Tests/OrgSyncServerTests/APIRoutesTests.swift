import OrgSyncAPI
import Testing

/// The route table's own rules: the paths the CLI builds from it and the matching the server's
/// 405 answers use.
@Suite struct APIRoutesTests {
    @Test func pathsFillEachNamedSegmentPercentEncoded() {
        #expect(APIRoutes.linkSuspend.path(["link": "demo"]) == "/v1/links/demo/suspend")
        #expect(APIRoutes.linkDeadLetterRetry.path(["link": "a.b_c-d", "offset": "42"]) == "/v1/links/a.b_c-d/dead-letters/42/retry")
        // A value cannot leave its segment or start a query.
        #expect(APIRoutes.link.path(["link": "../x?y=1 z"]) == "/v1/links/..%2Fx%3Fy%3D1%20z")
        #expect(APIRoutes.entries.path(["stream": "é"]) == "/v1/streams/%C3%A9/entries")
        #expect(APIRoutes.links.path() == "/v1/links")
        #expect(APIRoutes.statusPage.path() == "/")
    }

    @Test func aPathMatchesTheOneRouteOfItsShape() {
        #expect(APIRoutes.route(matching: "/v1/links/demo") == APIRoutes.link)
        #expect(APIRoutes.route(matching: "/v1/links/demo/sync-log") == APIRoutes.linkSyncLog)
        #expect(APIRoutes.route(matching: "/v1/streams/events/entries") == APIRoutes.entries)
        #expect(APIRoutes.route(matching: "/v1/links/demo/dead-letters/7/retry") == APIRoutes.linkDeadLetterRetry)
        #expect(APIRoutes.route(matching: "/v1/links/demo/nothing") == nil)
        #expect(APIRoutes.route(matching: "/v2/links") == nil)
        #expect(Set(APIRoutes.all.map(\.pattern)).count == APIRoutes.all.count, "no pattern twice")
        for route in APIRoutes.all {
            #expect(APIRoutes.route(matching: route.path(["stream": "s", "link": "l", "offset": "1"])) == route, "\(route.pattern)")
        }
    }
}
