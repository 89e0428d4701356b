"""Request-path plugins: auth, rate limiting, metrics, and the plugin API."""
