"""Running as a daemon: signals and reload, sd_notify, metrics server and structured logs."""
