"""Example transforms, the README's walk-through (not registered as built-ins)."""
