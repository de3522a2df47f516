"""trafficd: move inference traffic away from slow regions in Route 53, and back when they recover."""

__version__ = "0.1.0"
