"""The stroke-painting web page (``sdekit serve``): a standard-library HTTP server and one static page."""
