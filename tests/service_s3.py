"""Fixtures starting a throwaway S3 server (filled in by the studio-mode work)."""
