"""An example "typical existing site" that adopts flask_tidings; see site.py."""
