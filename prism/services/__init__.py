"""Local service topology: `prism up / ps / down` (the compose file as processes)."""
