"""Loopback fakes of the helpdesks' APIs, shared by tests, benches and the demo."""
