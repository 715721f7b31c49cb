"""The live contract check: does the real API answer the way the provider assumes? (see check.py)"""
