"""Probing inference workers: the streaming prober, SSE parsing, credentials, discovery and the agent loop."""
