"""The SLO policy: strict schema, YAML loading with line/column, messages, checks and diff (pure)."""
