"""`storage-client`: the command-line client for people (transfers, listings, quota, bill) on the public API."""
