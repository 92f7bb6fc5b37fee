import Hummingbird
import OrgSyncAPI
import OrgSyncBroker
import OrgSyncNotifications

/// `GET /v1/notifications`: the targets and their queues (an empty list without any).
func addNotificationRoutes(to routes: RouteGroups, broker: Broker) {
    routes.produce.get(APIRoutes.notifications) { _, _ -> Response in
        guard let notifier = broker.notifier else { return jsonResponse(NotificationList(notifications: [])) }
        let lanes = notifier.status()
        return jsonResponse(NotificationList(notifications: notifier.targets.map { target in
            NotificationTargetBody(
                name: target.name, events: target.events.map(\.rawValue).sorted(),
                links: lanes.filter { $0.notification == target.name }.map(NotificationLinkBody.init))
        }))
    }
}

extension NotificationLinkBody {
    init(_ lane: NotificationLaneStatus) {
        self.init(
            link: lane.link, pending: lane.pending, headAttempts: lane.headAttempts, lastError: lane.lastError,
            delivered: lane.deliveredCount, deadLettered: lane.deadLetteredCount,
            deadLetters: lane.deadLetters.map {
                NotificationDeadLetterBody(id: $0.event.id, type: $0.event.type.rawValue, reason: $0.reason, attempts: $0.attempts, atMs: $0.atMs)
            })
    }
}
