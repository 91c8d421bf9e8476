"""Builds the transport an upstream's config asks for."""

from __future__ import annotations

import logging

from gateway.config import UpstreamConfig
from gateway.upstreams.base import Transport


def make_transport(config: UpstreamConfig) -> Transport:
    logger = logging.getLogger(f"tollgate.upstream.{config.name}")
    if config.type == "stdio":
        from gateway.upstreams.stdio import StdioTransport

        assert config.command is not None
        return StdioTransport(config.name, config.command, config.args, config.env, config.cwd,
                              config.max_message_bytes, logger, withheld_env=config.withheld_env)
    if config.type == "http":
        from gateway.upstreams.http import StreamableHttpTransport

        assert config.url is not None
        return StreamableHttpTransport(config.name, config.url, dict(config.headers), config.max_message_bytes,
                                       config.timeouts.init_seconds, logger)
    from gateway.upstreams.sse import LegacySseTransport

    assert config.url is not None
    return LegacySseTransport(config.name, config.url, dict(config.headers), config.max_message_bytes,
                              config.timeouts.init_seconds, logger)
