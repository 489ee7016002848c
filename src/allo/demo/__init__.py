"""`allo demo`: a demo account and live French and English traffic, shipped in the package."""
