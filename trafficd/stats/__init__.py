"""Samples to window statistics: sketch and window maths (pure) and the Redis sink and view."""
