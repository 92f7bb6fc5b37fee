// The webhook adapter: see WebhookAdapter.swift.
