"""The platform's operations code location (see README.md)."""
