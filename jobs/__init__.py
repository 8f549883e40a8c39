"""Thin entry points: parse flags, set up logging, call into the role packages."""
