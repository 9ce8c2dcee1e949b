"""The conformance kit: checks a backend's ops and helpers against a float64 numpy reference."""
