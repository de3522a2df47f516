"""The controller loop and its Redis-backed state: lease, stored state, on-call overrides."""
