"""Frontends translate models into the IR. They never optimize."""
