"""End-to-end tests that run real clients (the Claude Code CLI) against local servers."""
