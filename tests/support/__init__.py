"""Test support: live servers, S3 server, tokens."""
