"""HTTP routes: customer (API.md §4), admin (§5), health."""
