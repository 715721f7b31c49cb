"""Links for Cloudflare Workflows."""
