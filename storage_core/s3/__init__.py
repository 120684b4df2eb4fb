"""The S3 door: wire-format primitives (SigV4, aws-chunked bodies, XML, errors, access-key secrets)."""
