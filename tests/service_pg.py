"""Fixtures starting a throwaway PostgreSQL server (filled in by the studio-mode work)."""
