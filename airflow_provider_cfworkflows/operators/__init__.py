"""Operators for Cloudflare Workflows."""
