"""Read-only web UI and JSON API over `store.queries`."""
