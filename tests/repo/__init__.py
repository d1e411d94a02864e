"""The repository itself: container files, docs, the import layering."""
