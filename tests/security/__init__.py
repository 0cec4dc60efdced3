"""Security checks across the whole site: who may do what, and how sessions behave."""
