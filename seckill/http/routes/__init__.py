"""HTTP routes: customer (docs/API.md §4), admin (§5), health."""
