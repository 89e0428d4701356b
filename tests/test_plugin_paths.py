"""plugins/paths.py: exact paths and "*" prefixes."""

from inferd.plugins.paths import PathSet


def test_exact_paths_match_only_themselves():
    paths = PathSet(["/health", "/"])
    assert "/health" in paths and "/" in paths
    assert "/health/x" not in paths and "/healthz" not in paths


def test_a_trailing_star_matches_a_prefix():
    paths = PathSet(["/static/*"])
    assert "/static/app.js" in paths and "/static/" in paths
    assert "/static" not in paths and "/other" not in paths
