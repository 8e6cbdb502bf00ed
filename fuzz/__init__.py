"""Coverage-guided fuzz targets for Ferry's sans-IO core (see docs/fuzzing.md)."""
