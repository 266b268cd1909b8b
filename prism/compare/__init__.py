"""``prism compare``: centralized vs federated vs hybrid vs local-only on one stream."""
