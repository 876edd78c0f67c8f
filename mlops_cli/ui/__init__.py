"""The dashboard: `server` (HTTP, pages, actions), `data` (its one adapter to the library)."""
