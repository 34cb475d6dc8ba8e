"""Per-cloud Pulumi components and the settings they share."""
