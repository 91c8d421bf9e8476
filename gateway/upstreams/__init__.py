"""Upstream MCP transports (stdio, Streamable HTTP, legacy SSE) behind one small interface."""
