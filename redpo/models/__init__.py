"""Models by name: packaged offline models, tiny random models, hub ids and local folders, with content hashes."""
