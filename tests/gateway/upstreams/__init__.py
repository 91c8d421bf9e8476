"""Tests of the upstream transports against real fixture servers."""
