"""The web console (``sfamp console``): a browser UI over the same library code as the CLI."""
