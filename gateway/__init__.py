"""Tollgate's MCP proxy: one Streamable HTTP endpoint in front of many upstream MCP servers."""
