"""The DNS side: owned records from the traffic matrix (pure) and the Route 53 provider."""
