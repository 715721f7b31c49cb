"""Sensors for Cloudflare Workflows."""
