"""Hooks for Cloudflare Workflows."""
