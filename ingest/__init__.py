"""OTLP/HTTP receiver for Claude Code telemetry: decode, type, hand to the store writer."""
