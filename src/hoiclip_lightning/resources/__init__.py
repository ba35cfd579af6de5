"""Built-in data files (vocabularies) shipped with the package."""
