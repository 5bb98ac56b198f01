"""The HTTP layer: app factory, dependencies and versioned routers."""
