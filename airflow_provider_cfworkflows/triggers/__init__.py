"""Triggers for Cloudflare Workflows."""
