"""Route 53, the first DNS provider: `Route53Provider` (provider.py), its wire format (wire.py), the boto3 client
and listing (client.py), the error tree (outcome.py), sending within a deadline (sending.py), drift (drift.py)
and verification against the authoritative servers (verify.py)."""
