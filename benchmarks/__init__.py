"""Benchmarks and the Video-MME harness: clients of a running (or started) server.

The scripts run as ``python benchmarks/<name>.py``; they share ``chat_client``.
"""
