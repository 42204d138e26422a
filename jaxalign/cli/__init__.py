"""The `jaxalign` command line."""
