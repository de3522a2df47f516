"""Route 53 provider: boto3 reconciler, error outcomes and answer verification."""
