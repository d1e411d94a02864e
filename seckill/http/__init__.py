"""The HTTP layer: the app factory, routes, errors and the OpenAPI document."""
