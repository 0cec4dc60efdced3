"""Admin pages for composing announcements and reading their delivery figures."""
