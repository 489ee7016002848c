"""The web process: REST API, webhooks and (later) the agent workspace."""
