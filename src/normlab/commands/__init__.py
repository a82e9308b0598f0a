"""Commands of the larger features; each module has ``register(app)``."""
