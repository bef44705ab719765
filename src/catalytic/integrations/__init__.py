"""Integrations with the tools around catalytic: signing keys, in-toto, pytest."""
