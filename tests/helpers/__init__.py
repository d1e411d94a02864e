"""Helpers for the tests (not tests): the HTTP app, gateways, servers."""
