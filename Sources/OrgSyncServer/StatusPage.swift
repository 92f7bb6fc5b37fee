import HTTPTypes
import Hummingbird
import NIOCore
import OrgSyncAPI
import OrgSyncBroker

/// The operator's status page: `GET /` with its script and style sheet under `/ui/`.
///
/// The page holds no data: its script reads the JSON API (`/v1/whoami`, `/v1/links…`,
/// `/v1/streams`) with the token the operator typed, so the page itself is served without
/// auth. A strict Content-Security-Policy (scripts and styles from this origin only, no inline
/// code) backs up the script's own rule of rendering every value as text, never as HTML.
func addStatusPageRoutes(to routes: RouteGroups, authenticator: Authenticator) {
    routes.open.get(APIRoutes.statusPage) { _, _ -> Response in
        staticResponse(statusPageHTML, contentType: "text/html; charset=utf-8")
    }
    routes.open.get(APIRoutes.statusPageScript) { _, _ -> Response in
        staticResponse(statusPageScript, contentType: "text/javascript; charset=utf-8")
    }
    routes.open.get(APIRoutes.statusPageStyle) { _, _ -> Response in
        staticResponse(statusPageStyle, contentType: "text/css; charset=utf-8")
    }
    routes.open.get(APIRoutes.whoami) { request, context -> Response in
        let role = try await authenticator.role(of: request, context)
        return jsonResponse(WhoAmIBody(authEnabled: authenticator.isEnabled, role: role?.rawValue ?? "none"))
    }
}

/// The page's content is fixed text; the policy forbids inline script and style, plugins,
/// framing, and any origin but this one.
let statusPageSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func staticResponse(_ text: String, contentType: String) -> Response {
    var headers: HTTPFields = [
        .contentType: contentType,
        .cacheControl: "no-cache",
        .contentSecurityPolicy: statusPageSecurityPolicy,
        .xContentTypeOptions: "nosniff",
    ]
    if let referrerPolicy = HTTPField.Name("Referrer-Policy") { headers[referrerPolicy] = "no-referrer" }
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
}

/// The page, its style sheet and its script: `Embedded/status.{html,css,js}`, compiled in.
let statusPageHTML = EmbeddedFiles.statusHtml

let statusPageStyle = EmbeddedFiles.statusCss

/// The page's script. Every value from the API reaches the DOM through `textContent`,
/// `createTextNode` or `setAttribute` (never `innerHTML`); the token lives in
/// `sessionStorage` and leaves the page only in the `Authorization` header.
let statusPageScript = EmbeddedFiles.statusJs
