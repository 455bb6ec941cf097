"""The pure half of the ban list: data structures and decisions, no database, no API, no kopf."""
