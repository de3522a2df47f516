"""On-call and operator sub-commands of the `trafficd` CLI."""
